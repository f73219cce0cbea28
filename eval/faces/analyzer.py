"""One call from images to analysed faces: detect -> align -> embed (per recognizer) -> pose -> expression."""
from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from contextlib import contextmanager

import numpy as np
from tqdm import tqdm

from eval.faces.align import align_face
from eval.faces.detector import YuNetDetector, eye_line_angle
from eval.faces.expression import ExpressionClassifier, expression_crop
from eval.faces.images import ImageSource, describe, load_image
from eval.faces.mesh import FaceMesh
from eval.faces.recognizers import RECOGNIZERS, Recognizer
from eval.faces.types import Face, FaceInputError, ImageAnalysis

IMAGES_PER_CHUNK = 32  # images held in memory at once; their faces share each model call


class FaceAnalyzer:
    """Analyse faces in batches. Models load once; every model call takes all faces of a chunk.

    `model_files` maps a register id ("sface", "arcface", ...) to an explicit weight file.
    `timings` accumulates seconds spent inside model inference, per model, for benchmarks.
    """

    def __init__(
        self,
        recognizers: Sequence[str] = ("sface", "dlib"),
        *,
        min_face_size: int = 40,
        with_pose: bool = True,
        with_expression: bool = True,
        detector_threshold: float = 0.6,
        model_files: dict[str, str] | None = None,
    ):
        files = model_files or {}
        unknown = [name for name in recognizers if name not in RECOGNIZERS]
        if unknown:
            raise ValueError(f"unknown recognizer(s) {unknown}; available: {sorted(RECOGNIZERS)}")
        self.min_face_size = min_face_size
        self.detector = YuNetDetector(score_threshold=detector_threshold, model_file=files.get("yunet"))
        self.recognizers: dict[str, Recognizer] = {name: RECOGNIZERS[name](files.get(name)) for name in recognizers}
        self.expression = ExpressionClassifier(files.get("fer")) if with_expression else None
        self.mesh = FaceMesh(files.get("face_mesh")) if with_pose else None
        self.timings: dict[str, float] = defaultdict(float)

    @property
    def recognizer_ids(self) -> list[str]:
        return list(self.recognizers)

    @property
    def model_ids(self) -> list[str]:
        ids = ["yunet"] + (["face_mesh"] if self.mesh else [])
        ids += [model for r in self.recognizers.values() for model in r.model_ids]
        return ids + (["fer"] if self.expression else [])

    @contextmanager
    def _timed(self, model: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[model] += time.perf_counter() - start

    def analyze(self, images: Iterable[ImageSource], progress: bool = False) -> list[ImageAnalysis]:
        images = list(images)
        results: list[ImageAnalysis] = []
        with tqdm(total=len(images), desc="faces", unit="img", disable=not progress) as bar:
            for start in range(0, len(images), IMAGES_PER_CHUNK):
                chunk = images[start : start + IMAGES_PER_CHUNK]
                results.extend(self._analyze_chunk(chunk))
                bar.update(len(chunk))
        return results

    def analyze_one(self, image: ImageSource) -> ImageAnalysis:
        return self.analyze([image])[0]

    def _analyze_chunk(self, chunk: list[ImageSource]) -> list[ImageAnalysis]:
        results, pixels = [], []
        for source in chunk:
            result, rgb = self._detect(source)
            results.append(result)
            pixels.append(rgb)
        pending = [(face, rgb) for result, rgb in zip(results, pixels) for face in result.faces]
        for name, recognizer in self.recognizers.items():
            inputs = [recognizer.prepare(rgb, face) for face, rgb in pending]
            with self._timed(name):
                vectors = recognizer.embed(inputs)
            for (face, _), vector in zip(pending, vectors):
                face.embeddings[name] = vector
        if self.expression is not None:
            crops = [expression_crop(rgb, face) for face, rgb in pending]
            with self._timed("fer"):
                expressions = self.expression.classify(crops)
            for (face, _), expression in zip(pending, expressions):
                face.expression = expression
        return results

    def _detect(self, source: ImageSource) -> tuple[ImageAnalysis, np.ndarray | None]:
        result = ImageAnalysis(image=describe(source))
        try:
            rgb = load_image(source)
        except FaceInputError as error:
            result.error = error.reason
            return result, None
        result.height, result.width = rgb.shape[:2]
        with self._timed("yunet"):
            detections = self.detector.detect_frame(rgb)
        faces = [Face(bbox=tuple(map(float, box)), score=score, landmarks=marks) for box, score, marks in detections]
        large = [face for face in faces if face.size >= self.min_face_size]
        if not faces:
            result.error = "no face detected"
        elif not large:
            result.error = f"face too small ({faces[0].size:.0f} px < {self.min_face_size} px)"
        for face in large:
            box = np.array(face.bbox)
            if self.mesh is not None:
                with self._timed("face_mesh"):
                    fit = self.mesh.fit(rgb, box, eye_line_angle(face.landmarks))
                face.pose, box, face.landmarks = fit.pose, fit.box, fit.landmarks
            else:
                with self._timed("yunet"):
                    box, _, face.landmarks = self.detector.refine(rgb, (box, face.score, face.landmarks))
            face.bbox = tuple(map(float, box))
            face.aligned = align_face(rgb, face.landmarks)
        result.faces = large
        return result, rgb
