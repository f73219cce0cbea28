"""Head pose (yaw, pitch, roll) from the 468-point face mesh, by symmetric rigid point pairs.

The mesh model returns each point's x, y in crop pixels and a depth z on the same scale (z grows
away from the camera), i.e. the face seen by an orthographic camera looking along the crop's axis;
no focal length or principal point enters, so the pose does not depend on where the face sits in
the frame.

Canonical frontal face (all angles zero), the documented zero of each angle:
- the face's left-right axis, the mean direction from the image-left to the image-right member of
  rigid symmetric pairs (eye corners, cheekbones, nose wings; never the mouth, eyebrows or jaw,
  which move with expression, nor the outline, which slides as the head turns), is parallel to the
  image's x axis: yaw = 0 and roll = 0;
- the face's down axis, from the mean of the four eye corners to the mean of four cheek points at
  the level of the nose wings, orthogonalised to the left-right axis, lies in the image plane: pitch = 0.
  Those points are at about the same depth on a face, so this is the face's own plane, not the
  camera's, turned towards the camera.

The rotation's columns are those axes in camera coordinates (x right, y down, z away); it is
decomposed as R = Rz(roll) . Ry(yaw) . Rx(-pitch), so an in-plane rotation of the image adds exactly
to roll. Signs follow `eval.faces.types.Pose`.
"""
from __future__ import annotations

import math

import numpy as np

from eval.faces.types import Pose

# MediaPipe face-mesh indices: (image-left, image-right) member on a frontal face.
RIGID_PAIRS = [
    (33, 263), (133, 362),  # outer and inner eye corners
    (116, 345), (117, 346), (118, 347), (111, 340), (123, 352), (50, 280),  # cheekbones
    (98, 327), (129, 358), (48, 278), (64, 294), (102, 331), (100, 329),  # nose wings
]
EYE_CORNERS = [33, 263, 133, 362]
CHEEKS = [50, 280, 205, 425]


def euler_from_rotation(rotation: np.ndarray) -> Pose:
    """yaw, pitch, roll in degrees from R = Rz(roll) Ry(yaw) Rx(-pitch)."""
    yaw = math.asin(float(np.clip(-rotation[2, 0], -1.0, 1.0)))
    pitch_down = math.atan2(rotation[2, 1], rotation[2, 2])
    roll = math.atan2(rotation[1, 0], rotation[0, 0])
    return Pose(yaw=math.degrees(yaw), pitch=-math.degrees(pitch_down), roll=math.degrees(roll))


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / (np.linalg.norm(vector, axis=-1, keepdims=True) + 1e-12)


_LEFT, _RIGHT = np.array(RIGID_PAIRS).T


def _right_axes(points: np.ndarray) -> np.ndarray:
    """The face's left-right axis of each of N meshes: the mean direction of the rigid pairs, Nx3."""
    return _unit(_unit(points[:, _RIGHT] - points[:, _LEFT]).sum(axis=1))


def mesh_roll(points: np.ndarray) -> float:
    """Just the roll (degrees) of one 468x3 mesh: what `estimate_pose` gives, from its right axis alone."""
    x_axis = _right_axes(np.asarray(points, dtype=np.float64)[None])[0]
    return math.degrees(math.atan2(x_axis[1], x_axis[0]))


def mesh_rotations(points: np.ndarray) -> np.ndarray:
    """The face's axes (columns: right, down, away) of each of N 468x3 meshes in camera axes: Nx3x3."""
    points = np.asarray(points, dtype=np.float64)
    x_axis = _right_axes(points)
    down = points[:, CHEEKS].mean(axis=1) - points[:, EYE_CORNERS].mean(axis=1)
    y_axis = _unit(down - (down * x_axis).sum(axis=1, keepdims=True) * x_axis)
    return np.stack([x_axis, y_axis, np.cross(x_axis, y_axis)], axis=2)


def estimate_poses(points: np.ndarray) -> list[Pose]:
    """Poses of N 468x3 face meshes (x right, y down in pixels, z away from the camera, same scale)."""
    return [euler_from_rotation(rotation) for rotation in mesh_rotations(points)]


def estimate_pose(points: np.ndarray) -> Pose:
    """Pose of one 468x3 face mesh (x right, y down in pixels, z away from the camera, same scale)."""
    return estimate_poses(np.asarray(points)[None])[0]


def mirror_average(pose: Pose, mirrored: Pose, turn: float = 0.0) -> Pose:
    """The mean of a crop's pose and its mirror image's pose mapped back (yaw and roll change sign),
    plus the crop's turn (degrees) added to roll."""
    return Pose(
        yaw=(pose.yaw - mirrored.yaw) / 2,
        pitch=(pose.pitch + mirrored.pitch) / 2,
        roll=(pose.roll - mirrored.roll) / 2 + turn,
    )
