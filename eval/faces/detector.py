"""Face detection with five landmarks: YuNet (OpenCV Zoo, 2023mar int8) through cv2.FaceDetectorYN.

One pass over the whole frame finds the faces (`detect_frame`). With head pose, the analyzer then
takes each face's landmarks from the face mesh (`eval.faces.mesh`); without it (and for callers
of `detect`), YuNet refines them on a crop around the face at full face resolution:

Upright refinement: YuNet's landmarks lean towards upright on a tilted head (a 30 degree tilt reads
as about 20), so the crop is turned to stand the face upright by its eye line, in two rounds, and
the new landmarks are mapped back.

Flip averaging: each crop is also detected mirrored, and the landmarks are the mean of the two
readings. This halves landmark noise and makes alignment mirror-symmetric, at the cost of a second
pass on the small crop.
"""
from __future__ import annotations

import cv2
import numpy as np

from eval.faces.cpus import cpu_budget
from eval.faces.crops import levelled_crop, to_image
from eval.models import verified_model_path

cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # OpenCV 5 warns on every session

DETECTION_LONG_SIDE = 1280  # larger images are scaled down for the full-frame pass only
MIRROR_ORDER = [1, 0, 2, 4, 3]  # a mirror swaps the eyes and the mouth corners
UPRIGHT_TOLERANCE_DEG = 1.0
UPRIGHT_ROUNDS = 2
REFINE_CROP = 320  # side of the upright crop, in pixels; the face fills about half of it

Detection = tuple[np.ndarray, float, np.ndarray]  # bbox x0,y0,x1,y1; score; 5x2 landmarks


def eye_line_angle(landmarks: np.ndarray) -> float:
    """Degrees; positive when the image-right eye sits lower (the head tilts clockwise)."""
    (left_x, left_y), (right_x, right_y) = landmarks[0], landmarks[1]
    return float(np.degrees(np.arctan2(right_y - left_y, right_x - left_x)))


def unmirror(landmarks: np.ndarray, width: int) -> np.ndarray:
    """Landmarks found on a mirrored image, in the original image's coordinates (pixel-index x)."""
    landmarks = landmarks[MIRROR_ORDER].copy()
    landmarks[:, 0] = width - 1 - landmarks[:, 0]
    return landmarks


def moved_box(box: np.ndarray, landmarks: np.ndarray, refined: np.ndarray) -> np.ndarray:
    """The box shifted with its landmarks' mean, its size kept: refined landmarks re-centre the box
    too (the expression crop is cut from it, and a borderline expression follows small shifts)."""
    return box + np.tile(refined.mean(axis=0) - landmarks.mean(axis=0), 2)


class YuNetDetector:
    model_id = "yunet"

    def __init__(self, score_threshold: float = 0.6, nms_threshold: float = 0.3, model_file=None):
        if cpu_budget() < cv2.getNumThreads():  # OpenCV's pool is process-wide; only ever narrowed here
            cv2.setNumThreads(cpu_budget())
        self._detector = cv2.FaceDetectorYN.create(
            str(verified_model_path(self.model_id, model_file)), "", (320, 320), score_threshold, nms_threshold, 5000
        )

    def _detect_once(self, bgr: np.ndarray, scale: float = 1.0) -> list[Detection]:
        self._detector.setInputSize((bgr.shape[1], bgr.shape[0]))
        _, rows = self._detector.detect(bgr)
        faces = []
        for row in [] if rows is None else rows:
            x, y, w, h = row[:4].astype(np.float64)
            landmarks = row[4:14].reshape(5, 2).astype(np.float64)
            faces.append((np.array([x, y, x + w, y + h]) / scale, float(row[14]), landmarks / scale))
        return faces

    def detect_frame(self, rgb: np.ndarray) -> list[Detection]:
        """The one full-frame pass: faces with YuNet's raw landmarks, largest first."""
        height, width = rgb.shape[:2]
        scale = min(1.0, DETECTION_LONG_SIDE / max(height, width))
        if scale < 1.0:
            rgb = cv2.resize(rgb, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
        faces = self._detect_once(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), scale)
        faces.sort(key=lambda face: -(face[0][2] - face[0][0]) * (face[0][3] - face[0][1]))
        return faces

    def refine(self, rgb: np.ndarray, face: Detection, angle: float | None = None) -> Detection:
        """Flip-averaged box and landmarks from a crop turned upright by `angle` (degrees, as
        `eye_line_angle`); without an angle, by the face's own eye line, in up to two rounds."""
        box, score, landmarks = face
        for _ in range(1 if angle is not None else UPRIGHT_ROUNDS):
            turn = eye_line_angle(landmarks) if angle is None else angle
            side = 2.0 * max(box[2] - box[0], box[3] - box[1])
            crop, matrix = levelled_crop(rgb, landmarks.mean(axis=0), turn, side, REFINE_CROP)
            crop = cv2.cvtColor(crop, cv2.COLOR_RGB2BGR)
            found = self._nearest_centre(self._detect_once(crop))
            mirrored = self._nearest_centre(self._detect_once(np.ascontiguousarray(crop[:, ::-1])))
            if found is None:
                break
            readings = [found] + ([unmirror(mirrored, REFINE_CROP)] if mirrored is not None else [])
            refined = to_image(np.mean(readings, axis=0), matrix)
            box, landmarks = moved_box(box, landmarks, refined), refined
            if angle is None and abs(eye_line_angle(landmarks)) < UPRIGHT_TOLERANCE_DEG:
                break
        return box, score, landmarks

    @staticmethod
    def _nearest_centre(found: list[Detection]) -> np.ndarray | None:
        centre = (REFINE_CROP - 1) / 2
        distances = [np.linalg.norm(marks.mean(axis=0) - centre) for _, _, marks in found]
        return found[int(np.argmin(distances))][2] if found else None

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        """Faces in the image's pixels, largest first, landmarks refined upright and flip-averaged.
        Landmarks are in the ArcFace template's order: image-left eye, image-right eye, nose tip,
        image-left mouth corner, image-right mouth corner."""
        return [self.refine(rgb, face) for face in self.detect_frame(rgb)]
