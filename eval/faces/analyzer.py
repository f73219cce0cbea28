"""One call from images to analysed faces: detect -> align -> embed (per recognizer) -> pose -> expression."""
from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from eval.faces.align import align_face
from eval.faces.cpus import cpu_budget
from eval.faces.detector import YuNetDetector, eye_line_angle
from eval.faces.expression import ExpressionClassifier, expression_crop
from eval.faces.images import ImageSource, describe, load_image
from eval.faces.mesh import FaceMesh, MeshFit
from eval.faces.orientation import canonical, unmirror_face
from eval.faces.recognizers import RECOGNIZERS, Recognizer
from eval.faces.types import Face, FaceInputError, ImageAnalysis

IMAGES_PER_CHUNK = 32  # images held in memory at once; their faces share each model call
MESH_LANES = 2


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
        # One single-threaded mesh per CPU (up to two), each fitting its share of a chunk's faces: a
        # face's rounds follow one another, so two faces at once use the cores better than one face
        # on two threads (0.35 against 0.40 ms a read), and the results are the same bits.
        lanes = min(MESH_LANES, cpu_budget()) if with_pose else 0
        self.meshes = [FaceMesh(files.get("face_mesh"), threads=1) for _ in range(lanes)]
        self.mesh = self.meshes[0] if self.meshes else None
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
        detected = [self._detect(source) for source in chunk]  # each model's calls run back to back
        self._place([(image, face) for image in detected for face in image.result.faces])
        pending = [(face, image.rgb) for image in detected for face in image.result.faces]
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
        return [image.result for image in detected]

    def _detect(self, source: ImageSource) -> _Detected:
        """The image and its faces large enough to analyse, as YuNet found them on the image's
        canonical orientation (`eval.faces.orientation`)."""
        result = ImageAnalysis(image=describe(source))
        try:
            rgb = load_image(source)
        except FaceInputError as error:
            result.error = error.reason
            return _Detected(result)
        result.height, result.width = rgb.shape[:2]
        frame, mirrored = canonical(rgb)
        with self._timed("yunet"):
            detections = self.detector.detect_frame(frame)
        faces = [Face(bbox=tuple(map(float, box)), score=score, landmarks=marks) for box, score, marks in detections]
        result.faces = [face for face in faces if face.size >= self.min_face_size]
        if not faces:
            result.error = "no face detected"
        elif not result.faces:
            result.error = f"face too small ({faces[0].size:.0f} px < {self.min_face_size} px)"
        return _Detected(result, rgb, frame, mirrored)

    def _place(self, faces: list[tuple[_Detected, Face]]) -> None:
        """Pose, landmarks and box of each detected face from the face mesh (or, without pose, from
        YuNet's refinement), mapped back to the image as stored, and its aligned crop."""
        if self.meshes:
            with self._timed("face_mesh"):
                fits = self._fit_meshes([(image.frame, np.array(face.bbox), eye_line_angle(face.landmarks))
                                         for image, face in faces])
            for (_, face), fit in zip(faces, fits):
                face.pose, face.bbox, face.landmarks = fit.pose, tuple(map(float, fit.box)), fit.landmarks
        else:
            for image, face in faces:
                with self._timed("yunet"):
                    box, _, face.landmarks = self.detector.refine(image.frame, (np.array(face.bbox), face.score, face.landmarks))
                face.bbox = tuple(map(float, box))
        for image, face in faces:
            if image.mirrored:
                unmirror_face(face, image.result.width)
            face.aligned = align_face(image.rgb, face.landmarks)

    def _fit_meshes(self, jobs: list[tuple]) -> list[MeshFit]:
        """`FaceMesh.fit(*job)` for every job, each mesh taking every len(meshes)-th job in its thread."""
        if len(self.meshes) == 1 or len(jobs) < 2:
            return [self.mesh.fit(*job) for job in jobs]
        fits: list[MeshFit | None] = [None] * len(jobs)

        def run(lane: int) -> None:
            for index in range(lane, len(jobs), len(self.meshes)):
                fits[index] = self.meshes[lane].fit(*jobs[index])

        with ThreadPoolExecutor(len(self.meshes)) as pool:
            list(pool.map(run, range(len(self.meshes))))
        return fits


@dataclass
class _Detected:
    result: ImageAnalysis
    rgb: np.ndarray | None = None  # as stored
    frame: np.ndarray | None = None  # canonical orientation: rgb or its mirror image
    mirrored: bool = False
