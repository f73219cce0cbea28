"""Alignment to the standard ArcFace 112x112 five-point template by a similarity transform."""
from __future__ import annotations

import cv2
import numpy as np

ALIGNED_SIZE = 112

# insightface's arcface_dst: image-left eye, image-right eye, nose tip, image-left / image-right mouth corner.
ARCFACE_TEMPLATE = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)


def similarity_transform(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The 2x3 least-squares similarity (rotation, uniform scale, translation) taking source onto target.

    Umeyama's closed form, without reflection: the same estimate insightface and OpenCV use.
    """
    source = np.asarray(source, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    source_mean, target_mean = source.mean(axis=0), target.mean(axis=0)
    source_centred, target_centred = source - source_mean, target - target_mean
    covariance = target_centred.T @ source_centred / len(source)
    u, singular, vt = np.linalg.svd(covariance)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1.0
    rotation = u @ np.diag(sign) @ vt
    variance = (source_centred**2).sum() / len(source)
    scale = (singular * sign).sum() / variance if variance > 0 else 1.0
    translation = target_mean - scale * rotation @ source_mean
    return np.hstack([scale * rotation, translation[:, None]])


def align_face(rgb: np.ndarray, landmarks: np.ndarray, size: int = ALIGNED_SIZE) -> np.ndarray:
    """The face warped onto the ArcFace template: size x size x 3, same dtype as the input."""
    matrix = similarity_transform(landmarks, ARCFACE_TEMPLATE * (size / ALIGNED_SIZE))
    return cv2.warpAffine(rgb, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
