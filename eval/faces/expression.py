"""Facial expression: mini-Xception trained on FER2013 (7 classes), the TFLite file shipped by `fer`.

Only the weight file is used (the fer module imports tensorflow). Input, as fer prepares it: the
face box made square and padded, grey, 64x64, scaled to [-1, 1]. We pad by 10% of the box side
where fer pads 10 px around its Haar boxes.
"""
from __future__ import annotations

import cv2
import numpy as np

from eval.faces.cpus import cpu_budget
from eval.faces.types import EXPRESSION_LABELS, Expression, Face
from eval.models import verified_model_path

INPUT_SIZE = 64
PADDING = 0.10


def expression_crop(rgb: np.ndarray, face: Face) -> np.ndarray:
    """The 64x64 grey input for one face, values in [-1, 1]."""
    x0, y0, x1, y1 = face.bbox
    side = max(x1 - x0, y1 - y0) * (1 + 2 * PADDING)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    scale = INPUT_SIZE / side
    matrix = np.array([[scale, 0, INPUT_SIZE / 2 - scale * cx], [0, scale, INPUT_SIZE / 2 - scale * cy]])
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    crop = cv2.warpAffine(grey, matrix, (INPUT_SIZE, INPUT_SIZE), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE)
    return (crop.astype(np.float32) / 255.0 - 0.5) * 2.0


class ExpressionClassifier:
    model_id = "fer"

    def __init__(self, model_file=None):
        from ai_edge_litert.interpreter import Interpreter

        self._interpreter = Interpreter(model_path=str(verified_model_path(self.model_id, model_file)),
                                        num_threads=min(2, cpu_budget()))
        self._input = self._interpreter.get_input_details()[0]["index"]
        self._output = self._interpreter.get_output_details()[0]["index"]
        self._batch = 0

    def classify(self, crops: list[np.ndarray]) -> list[Expression]:
        if not crops:
            return []
        if len(crops) != self._batch:
            self._interpreter.resize_tensor_input(self._input, [len(crops), INPUT_SIZE, INPUT_SIZE, 1])
            self._interpreter.allocate_tensors()
            self._batch = len(crops)
        self._interpreter.set_tensor(self._input, np.stack(crops)[..., None].astype(np.float32))
        self._interpreter.invoke()
        probabilities = self._interpreter.get_tensor(self._output)
        return [
            Expression(
                label=EXPRESSION_LABELS[int(np.argmax(row))],
                scores={label: float(p) for label, p in zip(EXPRESSION_LABELS, row)},
            )
            for row in probabilities
        ]
