"""What an engine hands back per analysed image, and how it travels between processes.

A worker turns each face-core result into the two kinds of cache record (the main face, one embedding
per recognizer) and ships them as the cache's own byte encoding (JSON header + raw array bytes, never
pickled), so the driver stores exactly the floats the worker computed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from eval.cache import decode, encode
from eval.faces import FaceAnalyzer, ImageAnalysis


@dataclass(frozen=True)
class AnalyzerSpec:
    """How to build, in another process, an analyzer equal to the driver's."""

    recognizers: tuple[str, ...]
    min_face_size: int
    with_pose: bool
    with_expression: bool

    @classmethod
    def of(cls, analyzer: FaceAnalyzer) -> AnalyzerSpec:
        return cls(tuple(analyzer.recognizers), analyzer.min_face_size, analyzer.with_pose,
                   analyzer.expression is not None)

    def build(self) -> FaceAnalyzer:
        return FaceAnalyzer(self.recognizers, min_face_size=self.min_face_size, with_pose=self.with_pose,
                            with_expression=self.with_expression)


@dataclass
class ImageRecords:
    """The cache records of one image: its main face (`faces`) and its embeddings by recognizer."""

    sha256: str
    faces: dict
    embeddings: dict[str, dict] = field(default_factory=dict)

    def to_columns(self, recognizers: list[str]) -> dict[str, bytes | None]:
        return {"sha256": self.sha256, "faces": encode(self.faces),
                **{f"embed_{name}": encode(self.embeddings[name]) if name in self.embeddings else None
                   for name in recognizers}}

    @classmethod
    def from_columns(cls, row: dict, recognizers: list[str]) -> ImageRecords:
        return cls(row["sha256"], decode(row["faces"]),
                   {name: decode(row[f"embed_{name}"]) for name in recognizers if row[f"embed_{name}"] is not None})


def face_record(result: ImageAnalysis) -> dict:
    record: dict = {"error": result.error, "readable": result.width > 0, "n_faces": len(result.faces)}
    face = result.main_face
    if face is not None:
        record.update(bbox=np.asarray(face.bbox, dtype=np.float64), landmarks=np.asarray(face.landmarks),
                      score=float(face.score), aligned=np.asarray(face.aligned, dtype=np.uint8))
        if face.pose is not None:
            record.update(yaw=face.pose.yaw, pitch=face.pose.pitch, roll=face.pose.roll)
        if face.expression is not None:
            record["expression"] = face.expression.label
    return record


def analyse(analyzer: FaceAnalyzer, paths: list[Path], hashes: list[str]) -> list[ImageRecords]:
    """The records of images whose content hashes are `hashes`: one face-core batch, in order."""
    results = analyzer.analyze(paths)
    return [ImageRecords(sha256, face_record(result),
                         {} if result.main_face is None else
                         {name: {"vector": np.asarray(result.main_face.embeddings[name], dtype=np.float32)}
                          for name in analyzer.recognizers})
            for sha256, result in zip(hashes, results)]
