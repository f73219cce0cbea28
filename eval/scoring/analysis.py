"""Face analysis of every image a run needs, through the result cache.

Per image (by content hash) the cache holds two kinds of record:
- the main face's geometry, pose, expression and aligned crop, keyed by the detector / pose /
  expression models (with their weight hashes) and `FACES_VERSION`;
- one embedding per recognizer, keyed by that recognizer's models and `EMBED_VERSION`.
An image missing everything goes through the analyzer in one batch; an image missing only some
recognizers' embeddings has just those computed from its cached face, so changing one recognizer
recomputes only its column.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from eval.cache import ResultCache
from eval.engines import Engine
from eval.engines.local import LocalEngine
from eval.faces import Face, FaceAnalyzer, load_image
from eval.files import sha256_file
from eval.models import ModelNotFound, file_sha256, model_path

FACES_VERSION = "faces-v1"
EMBED_VERSION = "embed-v1"
OPTIONAL_RECOGNIZERS = ("arcface",)


def default_recognizers() -> list[str]:
    """SFace and dlib, and ArcFace when the user has supplied its weights."""
    found = ["sface", "dlib"]
    for name in OPTIONAL_RECOGNIZERS:
        try:
            model_path(name)
            found.append(name)
        except ModelNotFound:
            pass
    return found


@dataclass
class ImageRecord:
    """What scoring needs of one image: readability, face count and the main face."""

    path: Path
    sha256: str | None = None
    error: str | None = None  # why the image could not be read, or holds no usable face
    readable: bool = False
    n_faces: int = 0
    aligned: np.ndarray | None = None
    yaw: float | None = None
    pitch: float | None = None
    roll: float | None = None
    expression: str | None = None
    embeddings: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def has_face(self) -> bool:
        return self.n_faces > 0


def fingerprint(model_ids: list[str]) -> str:
    """Model ids with the first 16 hex digits of their weight files' sha256."""
    return "+".join(f"{model}:{file_sha256(model_path(model))[:16]}" for model in model_ids)


def _distinct(records: list[ImageRecord]) -> list[ImageRecord]:
    """One record per content hash (copies of an image are analysed once)."""
    return list({record.sha256: record for record in records}.values())


class CachedFaceAnalysis:
    def __init__(self, analyzer: FaceAnalyzer, cache: ResultCache, engine: Engine | None = None):
        self.analyzer = analyzer
        self.cache = cache
        self.engine = engine or LocalEngine()
        non_recognizer = [m for m in analyzer.model_ids
                          if not any(m in r.model_ids for r in analyzer.recognizers.values())]
        self.faces_namespace = f"{FACES_VERSION}/{fingerprint(non_recognizer)}/min{analyzer.min_face_size}"
        self.embed_namespaces = {
            name: f"{EMBED_VERSION}/{fingerprint(recognizer.model_ids)}"
            for name, recognizer in analyzer.recognizers.items()
        }

    @property
    def recognizers(self) -> list[str]:
        return list(self.analyzer.recognizers)

    def analyze(self, paths: list[Path], progress: bool = False) -> dict[Path, ImageRecord]:
        """{path: ImageRecord} for the distinct `paths`; each distinct content is analysed at most once."""
        records = {path: ImageRecord(path=path) for path in dict.fromkeys(paths)}
        for record in records.values():
            try:
                record.sha256 = sha256_file(record.path)
            except OSError as error:
                record.error = f"cannot read {record.path}: {error.strerror or error}"
        hashed = [r for r in records.values() if r.sha256]
        hashes = [r.sha256 for r in hashed]
        faces = self.cache.get_many(self.faces_namespace, hashes)
        embeddings = {name: self.cache.get_many(ns, hashes) for name, ns in self.embed_namespaces.items()}
        self._analyze_new(_distinct([r for r in hashed if r.sha256 not in faces]), faces, embeddings, progress)
        for name in self.embed_namespaces:
            missing = _distinct([r for r in hashed if faces[r.sha256]["n_faces"] and r.sha256 not in embeddings[name]])
            if missing:
                found = self._embed_cached_faces(name, missing, faces)
                self.cache.put_many(self.embed_namespaces[name], found)
                embeddings[name].update(found)
        for record in hashed:
            face = faces[record.sha256]
            for key in ("error", "readable", "n_faces", "aligned", "yaw", "pitch", "roll", "expression"):
                if key in face:
                    setattr(record, key, face[key])
            if record.has_face:
                record.embeddings = {name: embeddings[name][record.sha256]["vector"] for name in embeddings}
        return records

    def _analyze_new(self, new: list[ImageRecord], faces: dict[str, dict], embeddings: dict[str, dict[str, dict]],
                     progress: bool) -> None:
        """Send the images the cache has never seen to the engine; commit each chunk as it comes back."""
        if not new:
            return
        for chunk in self.engine.analyse(self.analyzer, [r.path for r in new], [r.sha256 for r in new], progress):
            new_faces = {record.sha256: record.faces for record in chunk}
            self.cache.put_many(self.faces_namespace, new_faces)
            faces.update(new_faces)
            for name, namespace in self.embed_namespaces.items():
                found = {record.sha256: record.embeddings[name] for record in chunk if name in record.embeddings}
                self.cache.put_many(namespace, found)
                embeddings[name].update(found)

    def _embed_cached_faces(self, name: str, records: list[ImageRecord], faces: dict[str, dict]) -> dict[str, dict]:
        recognizer = self.analyzer.recognizers[name]
        inputs = []
        for record in records:
            face = faces[record.sha256]
            main = Face(bbox=tuple(face["bbox"]), score=face["score"], landmarks=face["landmarks"],
                        aligned=face["aligned"])
            inputs.append(recognizer.prepare(load_image(record.path), main))
        vectors = recognizer.embed(inputs)
        return {record.sha256: {"vector": np.asarray(vector, dtype=np.float32)} for record, vector in zip(records, vectors)}
