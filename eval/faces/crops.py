"""Square crops around a face, rotated so the face stands upright, and the way back to image pixels."""
from __future__ import annotations

import math

import cv2
import numpy as np


def levelled_crop(image: np.ndarray, centre, angle: float, side: float, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A size x size crop of `side` image pixels around `centre`, turned by `angle` degrees
    (counter-clockwise, so a head tilted clockwise by `angle` comes out upright).

    A crop that shrinks the face is low-passed first (a Gaussian of sigma (1/scale - 1)/2, as
    scikit-image's anti-aliasing): bilinear sampling alone aliases, and aliasing would make a turned,
    shifted or mirrored copy of a photo read differently. The Gaussian is isotropic and
    shift-invariant, so it keeps the crop equivariant to all three.
    Returns the crop and the 2x3 matrix from image to crop pixels (pixel-index coordinates)."""
    cx, cy = float(centre[0]), float(centre[1])
    scale = size / float(side)
    matrix = cv2.getRotationMatrix2D((cx, cy), float(angle), scale)
    matrix[:, 2] += (size - 1) / 2 - np.array([cx, cy])
    source, offset = image, np.zeros(2)
    if scale < 1.0:
        sigma = (1.0 / scale - 1.0) / 2
        reach = int(math.ceil(side * 0.75 + 3 * sigma)) + 2  # half the turned square's diagonal, and the kernel
        x0, y0 = max(0, int(cx) - reach), max(0, int(cy) - reach)
        region = image[y0 : int(cy) + reach + 1, x0 : int(cx) + reach + 1]
        if region.size:
            source, offset = cv2.GaussianBlur(region, (0, 0), sigma, borderType=cv2.BORDER_REPLICATE), np.array([x0, y0])
    local = matrix.copy()
    local[:, 2] += matrix[:, :2] @ offset
    crop = cv2.warpAffine(source, local, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return crop, matrix


def to_image(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Crop-pixel x, y (first two columns) mapped back to image pixels."""
    inverse = cv2.invertAffineTransform(matrix)
    return np.hstack([points[:, :2], np.ones((len(points), 1))]) @ inverse.T
