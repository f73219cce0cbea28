"""What the face core returns: one `ImageAnalysis` per input image, holding its `Face`s.

These plain dataclasses are the face core's public contract: the harness, the report and the
reference model's identity loss all read them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

EXPRESSION_LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


@dataclass(frozen=True)
class Pose:
    """Head pose in degrees, camera looking at the subject.

    yaw   > 0: the face turns towards the image's left (the subject looks to their right).
    pitch > 0: the face tilts up (chin up).
    roll  > 0: the head tilts clockwise in the image (the subject's left eye, on the image's
               right, sits lower than the right eye).
    A mirror image flips the sign of yaw and roll and keeps pitch.
    """

    yaw: float
    pitch: float
    roll: float

    def as_dict(self) -> dict[str, float]:
        return {"yaw": self.yaw, "pitch": self.pitch, "roll": self.roll}


@dataclass(frozen=True)
class Expression:
    label: str
    scores: dict[str, float]

    def as_dict(self) -> dict:
        return {"label": self.label, "scores": self.scores}


@dataclass
class Face:
    bbox: tuple[float, float, float, float]  # x0, y0, x1, y1 in image pixels: the square the face mesh
    # spans (upright size), or YuNet's box when the analyzer runs without pose
    score: float  # detector confidence
    landmarks: np.ndarray  # 5x2: right eye, left eye (image left to right), nose, mouth right, mouth left
    aligned: np.ndarray | None = None  # 112x112x3 uint8 RGB, ArcFace template
    embeddings: dict[str, np.ndarray] = field(default_factory=dict)  # recognizer id -> vector
    pose: Pose | None = None
    expression: Expression | None = None

    @property
    def size(self) -> float:
        """Shorter side of the bounding box, in pixels."""
        x0, y0, x1, y1 = self.bbox
        return float(min(x1 - x0, y1 - y0))

    def as_dict(self) -> dict:
        return {
            "bbox": [round(float(v), 2) for v in self.bbox],
            "score": round(float(self.score), 4),
            "landmarks": np.round(self.landmarks, 2).tolist(),
            "pose": None if self.pose is None else {k: round(v, 2) for k, v in self.pose.as_dict().items()},
            "expression": None if self.expression is None else {
                "label": self.expression.label,
                "scores": {k: round(v, 4) for k, v in self.expression.scores.items()},
            },
        }


@dataclass
class ImageAnalysis:
    """The faces found in one image, the main face first.

    The main face is the largest detected face (bounding-box area). When there are several,
    `multiple_faces` is set and callers that need one identity must decide: the harness scores
    the main face and counts the image in its multi-face rate; it never averages identities.
    `error` is set (and `faces` empty) when the image could not be read, or held no usable face.
    """

    image: str
    faces: list[Face] = field(default_factory=list)
    error: str | None = None
    width: int = 0
    height: int = 0

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.faces)

    @property
    def main_face(self) -> Face | None:
        return self.faces[0] if self.faces else None

    @property
    def multiple_faces(self) -> bool:
        return len(self.faces) > 1

    def as_dict(self) -> dict:
        return {
            "image": self.image,
            "error": self.error,
            "faces": [f.as_dict() for f in self.faces],
        }


class FaceInputError(ValueError):
    """An input the face core cannot use. The message names the file and the reason."""

    def __init__(self, source: str | Path, reason: str):
        self.source = str(source)
        self.reason = reason
        super().__init__(f"{source}: {reason}")
