"""Face detection with five landmarks: YuNet (OpenCV Zoo, 2023mar int8) through cv2.FaceDetectorYN.

Flip averaging: each image is also detected mirrored, and each face's box and landmarks are the
mean of the two readings. This halves landmark noise and makes everything downstream (alignment,
pose) exactly mirror-symmetric, at the cost of a second detector pass (the cheapest model here).

Upright refinement: YuNet's landmarks lean towards upright on a tilted head (a 30 degree tilt reads
as about 20). A face whose eye line is tilted is therefore rotated upright in a crop around it and
detected again, and the new landmarks are mapped back; a second round removes what is left.
"""
from __future__ import annotations

import cv2
import numpy as np

from eval.models import verified_model_path

cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # OpenCV 5 warns on every session

DETECTION_LONG_SIDE = 1280  # larger images are scaled down for detection only
MIRROR_ORDER = [1, 0, 2, 4, 3]  # a mirror swaps the eyes and the mouth corners
MIN_MATCH_IOU = 0.5
UPRIGHT_TOLERANCE_DEG = 1.0
UPRIGHT_ROUNDS = 2
REFINE_CROP = 320  # side of the upright crop, in pixels; the face fills about half of it

Detection = tuple[np.ndarray, float, np.ndarray]  # bbox x0,y0,x1,y1; score; 5x2 landmarks


def iou(a: np.ndarray, b: np.ndarray) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    overlap = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - overlap
    return overlap / union if union > 0 else 0.0


def eye_line_angle(landmarks: np.ndarray) -> float:
    """Degrees; positive when the image-right eye sits lower (the head tilts clockwise)."""
    (left_x, left_y), (right_x, right_y) = landmarks[0], landmarks[1]
    return float(np.degrees(np.arctan2(right_y - left_y, right_x - left_x)))


def unmirror(detection: Detection, width: int) -> Detection:
    """A detection made on the mirrored image, in the original image's coordinates (pixel-index x)."""
    box, score, landmarks = detection
    box = np.array([width - 1 - box[2], box[1], width - 1 - box[0], box[3]])
    landmarks = landmarks[MIRROR_ORDER].copy()
    landmarks[:, 0] = width - 1 - landmarks[:, 0]
    return box, score, landmarks


class YuNetDetector:
    model_id = "yunet"

    def __init__(self, score_threshold: float = 0.6, nms_threshold: float = 0.3, flip_average: bool = True, model_file=None):
        self._detector = cv2.FaceDetectorYN.create(
            str(verified_model_path(self.model_id, model_file)), "", (320, 320), score_threshold, nms_threshold, 5000
        )
        self.flip_average = flip_average

    def _detect_once(self, bgr: np.ndarray, scale: float) -> list[Detection]:
        self._detector.setInputSize((bgr.shape[1], bgr.shape[0]))
        _, rows = self._detector.detect(bgr)
        faces = []
        for row in [] if rows is None else rows:
            x, y, w, h = row[:4].astype(np.float64)
            landmarks = row[4:14].reshape(5, 2).astype(np.float64)
            faces.append((np.array([x, y, x + w, y + h]) / scale, float(row[14]), landmarks / scale))
        return faces

    def _detect_averaged(self, bgr: np.ndarray, scale: float = 1.0) -> list[Detection]:
        faces = self._detect_once(bgr, scale)
        if self.flip_average and faces:
            width = round(bgr.shape[1] / scale)
            mirrored = [unmirror(face, width) for face in self._detect_once(np.ascontiguousarray(bgr[:, ::-1]), scale)]
            faces = [self._average(face, mirrored) for face in faces]
        return faces

    def _upright(self, bgr: np.ndarray, face: Detection) -> Detection:
        box, score, landmarks = face
        for _ in range(UPRIGHT_ROUNDS):
            angle = eye_line_angle(landmarks)
            if abs(angle) < UPRIGHT_TOLERANCE_DEG:
                break
            centre = landmarks.mean(axis=0)
            side = 2.0 * max(box[2] - box[0], box[3] - box[1])
            matrix = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), angle, REFINE_CROP / side)
            matrix[:, 2] += (REFINE_CROP - 1) / 2 - centre
            crop = cv2.warpAffine(bgr, matrix, (REFINE_CROP, REFINE_CROP), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            found = self._detect_averaged(crop)
            if not found:
                break
            nearest = min(found, key=lambda f: np.linalg.norm(f[2].mean(axis=0) - (REFINE_CROP - 1) / 2))
            inverse = cv2.invertAffineTransform(matrix)
            landmarks = np.hstack([nearest[2], np.ones((5, 1))]) @ inverse.T
        return box, score, landmarks

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        """Faces in the image's pixels, largest first. Landmarks are in the ArcFace template's order:
        image-left eye, image-right eye, nose tip, image-left mouth corner, image-right mouth corner."""
        height, width = rgb.shape[:2]
        scale = min(1.0, DETECTION_LONG_SIDE / max(height, width))
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        if scale < 1.0:
            bgr = cv2.resize(bgr, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
        faces = self._detect_averaged(bgr, scale)
        full = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR) if scale < 1.0 else bgr
        faces = [self._upright(full, face) for face in faces]
        faces.sort(key=lambda face: -(face[0][2] - face[0][0]) * (face[0][3] - face[0][1]))
        return faces

    @staticmethod
    def _average(face: Detection, mirrored: list[Detection]) -> Detection:
        overlaps = [iou(face[0], other[0]) for other in mirrored]
        if not overlaps or max(overlaps) < MIN_MATCH_IOU:
            return face
        match = mirrored[int(np.argmax(overlaps))]
        return (face[0] + match[0]) / 2, (face[1] + match[1]) / 2, (face[2] + match[2]) / 2
