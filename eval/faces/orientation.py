"""Canonical orientation: a photo and its mirror image are analysed as the same pixels.

The detector's one full-frame pass is not mirror-equivariant: on a mirrored photo YuNet's box and
eye line come out a few per cent and about a degree off the mirrored ones, and every crop placed
from them inherits that. So the analyzer reads each photo either as stored or mirrored, whichever
carries more of its brightness on the right: the sign of the horizontal moment of its column sums
(every fourth row), an exact integer that a mirror negates. A photo and its mirror image thus give the same canonical
pixels, bit for bit, and results that are exactly each other's mirror (canonicalisation, the
standard way to make a non-equivariant model equivariant to a finite group). Only an image whose
moments are all exactly zero is ambiguous, and it is read as stored.
"""
from __future__ import annotations

import cv2
import numpy as np

from eval.faces.detector import unmirror
from eval.faces.types import Face, Pose


def reads_mirrored(rgb: np.ndarray) -> bool:
    """Whether the canonical orientation of this HxWx3 uint8 image is its mirror image."""
    # Every fourth row: a mirror maps rows onto themselves, so the moment stays exact and negates.
    columns = cv2.reduce(rgb[::4], 0, cv2.REDUCE_SUM, dtype=cv2.CV_32S)[0].astype(np.int64)  # W x 3
    width = len(columns)
    moments = (2 * np.arange(width, dtype=np.int64) - (width - 1)) @ columns  # per channel
    decisive = moments[moments != 0]
    return bool(decisive.size) and decisive[0] < 0


def canonical(rgb: np.ndarray) -> tuple[np.ndarray, bool]:
    """The pixels to analyse and whether they are the mirror image of `rgb`."""
    mirrored = reads_mirrored(rgb)
    return (cv2.flip(rgb, 1) if mirrored else rgb), mirrored


def mirrored_pose(pose: Pose | None) -> Pose | None:
    return None if pose is None else Pose(yaw=-pose.yaw, pitch=pose.pitch, roll=-pose.roll)


def unmirror_face(face: Face, width: int) -> Face:
    """A face found on the mirror image, in place, in the coordinates of the image `width` wide."""
    x0, y0, x1, y1 = face.bbox
    face.bbox = (width - 1 - x1, y0, width - 1 - x0, y1)
    face.landmarks = unmirror(face.landmarks, width)
    face.pose = mirrored_pose(face.pose)
    return face
