"""Head pose (yaw, pitch, roll) from the five landmarks, by perspective-n-point on a generic 3-D face.

The 3-D points are a generic adult face (63 mm between the eyes, the nose tip 55% of the way from
the eye line to the mouth line, as in frontal portraits and the common 6-point head model) with
typical depths, in camera axes (x right, y down, z away from the camera); the model is
left-right symmetric, so a mirror image gives the mirrored pose exactly. The camera is a pinhole
with focal length = the image's longer side and the principal point at the centre ((w-1)/2, (h-1)/2 in
pixel-index coordinates, so a mirror maps the camera onto itself) (unknown
intrinsics; this is the usual assumption and matters little for the angles).

The rotation is decomposed as R = Rz(roll) . Ry(yaw) . Rx(pitch'), so an in-plane rotation of the
image adds exactly to roll. Signs follow `eval.faces.types.Pose`.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from eval.faces.types import Pose

FACE_MODEL_MM = np.array(
    [
        [-31.5, -40.0, 27.0],  # image-left eye
        [31.5, -40.0, 27.0],  # image-right eye
        [0.0, 0.0, 0.0],  # nose tip
        [-26.0, 33.0, 24.0],  # image-left mouth corner
        [26.0, 33.0, 24.0],  # image-right mouth corner
    ],
    dtype=np.float64,
)


def euler_from_rotation(rotation: np.ndarray) -> Pose:
    """yaw, pitch, roll in degrees from R = Rz(roll) Ry(yaw) Rx(-pitch)."""
    yaw = math.asin(float(np.clip(-rotation[2, 0], -1.0, 1.0)))
    pitch_down = math.atan2(rotation[2, 1], rotation[2, 2])
    roll = math.atan2(rotation[1, 0], rotation[0, 0])
    return Pose(yaw=math.degrees(yaw), pitch=-math.degrees(pitch_down), roll=math.degrees(roll))


def estimate_pose(landmarks: np.ndarray, image_size: tuple[int, int]) -> Pose:
    """Pose from 5x2 landmarks (template order) in an image of (width, height)."""
    width, height = image_size
    focal = float(max(width, height))
    camera = np.array([[focal, 0, (width - 1) / 2.0], [0, focal, (height - 1) / 2.0], [0, 0, 1]], dtype=np.float64)
    ok, rvec, _ = cv2.solvePnP(
        FACE_MODEL_MM, np.asarray(landmarks, dtype=np.float64).reshape(5, 1, 2), camera, None,
        flags=cv2.SOLVEPNP_SQPNP,
    )
    if not ok:
        raise ValueError("head pose: perspective-n-point found no solution")
    rotation, _ = cv2.Rodrigues(rvec)
    return euler_from_rotation(rotation)
