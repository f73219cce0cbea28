"""Face detection with five landmarks: YuNet (OpenCV Zoo, 2023mar int8) through cv2.FaceDetectorYN."""
from __future__ import annotations

import cv2
import numpy as np

from eval.models import verified_model_path

DETECTION_LONG_SIDE = 1280  # larger images are scaled down for detection only

cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # errors only: OpenCV 5 warns on every session that its new engine ignores targets


class YuNetDetector:
    model_id = "yunet"

    def __init__(self, score_threshold: float = 0.6, nms_threshold: float = 0.3, model_file=None):
        self._detector = cv2.FaceDetectorYN.create(
            str(verified_model_path(self.model_id, model_file)), "", (320, 320), score_threshold, nms_threshold, 5000
        )

    def detect(self, rgb: np.ndarray) -> list[tuple[np.ndarray, float, np.ndarray]]:
        """(bbox x0,y0,x1,y1; score; 5x2 landmarks) per face, in the image's pixels, largest first.

        Landmarks are ordered image-left eye, image-right eye, nose tip, image-left mouth corner,
        image-right mouth corner (the ArcFace template's order).
        """
        height, width = rgb.shape[:2]
        scale = min(1.0, DETECTION_LONG_SIDE / max(height, width))
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        if scale < 1.0:
            bgr = cv2.resize(bgr, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
        self._detector.setInputSize((bgr.shape[1], bgr.shape[0]))
        _, rows = self._detector.detect(bgr)
        faces = []
        for row in [] if rows is None else rows:
            x, y, w, h = row[:4] / scale
            landmarks = row[4:14].reshape(5, 2).astype(np.float64) / scale
            faces.append((np.array([x, y, x + w, y + h]), float(row[14]), landmarks))
        faces.sort(key=lambda face: -(face[0][2] - face[0][0]) * (face[0][3] - face[0][1]))
        return faces
