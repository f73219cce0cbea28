"""Square crops around a face, rotated so the face stands upright, and the way back to image pixels."""
from __future__ import annotations

import math

import cv2
import numpy as np


def antialiased(image: np.ndarray, centre, side: float, size: int, angle: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """The part of `image` that a crop of `side` pixels around `centre`, turned by `angle` degrees,
    reaches, low-passed for shrinking `side` to `size` pixels, and the offset of its top-left pixel.

    A Gaussian of sigma (1/scale - 1)/2, as scikit-image's anti-aliasing: bilinear sampling alone
    aliases, and aliasing would make a turned, shifted or mirrored copy of a photo read differently.
    The Gaussian is isotropic and shift-invariant, so it keeps the crop equivariant to all three.
    Only the turned square's bounding box (and the kernel's reach) is filtered."""
    scale = size / float(side)
    if scale >= 1.0:
        return image, np.zeros(2)
    sigma = (1.0 / scale - 1.0) / 2
    turn = math.radians(angle)
    cx, cy = int(centre[0]), int(centre[1])
    reach = int(math.ceil(side / 2 * (abs(math.cos(turn)) + abs(math.sin(turn))) + 3 * sigma)) + 2
    x0, y0 = max(0, cx - reach), max(0, cy - reach)
    region = image[y0 : cy + reach + 1, x0 : cx + reach + 1]
    if not region.size:
        return image, np.zeros(2)
    return cv2.GaussianBlur(region, (0, 0), sigma, borderType=cv2.BORDER_REPLICATE), np.array([x0, y0], float)


def levelled_crop(image: np.ndarray, centre, angle: float, side: float, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A size x size crop of `side` image pixels around `centre`, turned by `angle` degrees
    (counter-clockwise, so a head tilted clockwise by `angle` comes out upright), sampled from the
    anti-aliased region it reaches.

    Returns the crop and the 2x3 matrix from image to crop pixels (pixel-index coordinates)."""
    cx, cy = float(centre[0]), float(centre[1])
    matrix = cv2.getRotationMatrix2D((cx, cy), float(angle), size / float(side))
    matrix[:, 2] += (size - 1) / 2 - np.array([cx, cy])
    region, offset = antialiased(image, centre, side, size, angle)
    local = matrix.copy()
    local[:, 2] += matrix[:, :2] @ offset
    crop = cv2.warpAffine(region, local, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return crop, matrix


def to_image(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Crop-pixel x, y (first two columns) mapped back to image pixels."""
    inverse = cv2.invertAffineTransform(matrix)
    return np.hstack([points[:, :2], np.ones((len(points), 1))]) @ inverse.T
