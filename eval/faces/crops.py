"""Square crops around a face, rotated so the face stands upright, and the way back to image pixels."""
from __future__ import annotations

import math

import cv2
import numpy as np


def crop_matrix(centre, angle: float, side: float, size: int) -> np.ndarray:
    """The 2x3 matrix from image to crop pixels (pixel-index coordinates) of a size x size crop of
    `side` image pixels around `centre`, turned by `angle` degrees counter-clockwise."""
    cx, cy = float(centre[0]), float(centre[1])
    matrix = cv2.getRotationMatrix2D((cx, cy), float(angle), size / float(side))
    matrix[:, 2] += (size - 1) / 2 - np.array([cx, cy])
    return matrix


def reach(side: float, angle: float) -> float:
    """Half the extent, along x or y, of a square of `side` turned by `angle` degrees."""
    turn = math.radians(angle)
    return side / 2 * (abs(math.cos(turn)) + abs(math.sin(turn)))


class CropSource:
    """The part of `image` that crops of about `side` pixels around `centre`, shrunk to `size`
    pixels, turned by about `angle`, reach (`margin` times the side), low-passed once for that shrinking.

    A Gaussian of sigma (1/scale - 1)/2, as scikit-image's anti-aliasing: bilinear sampling alone
    aliases, and aliasing would make a turned, shifted or mirrored copy of a photo read differently.
    The Gaussian is isotropic and shift-invariant, so it keeps the crops equivariant to all three.
    The face mesh's rounds move a crop by a few per cent, so they share one filtered region."""

    def __init__(self, image: np.ndarray, centre, side: float, size: int, angle: float = 0.0, margin: float = 1.0):
        self.size, self.side = size, float(side)
        scale = size / float(side)
        self.offset = np.zeros(2)
        self.region = image
        self.bounds = (-math.inf, -math.inf, math.inf, math.inf)  # where crops may reach
        if scale >= 1.0:
            return
        sigma = (1.0 / scale - 1.0) / 2
        extent = int(math.ceil(reach(margin * side, angle) + 3 * sigma)) + 2
        cx, cy = int(centre[0]), int(centre[1])
        x0, y0 = max(0, cx - extent), max(0, cy - extent)
        region = image[y0 : cy + extent + 1, x0 : cx + extent + 1]
        if not region.size:
            return
        height, width = image.shape[:2]
        x1, y1 = x0 + region.shape[1], y0 + region.shape[0]
        inner = 3 * sigma + 1  # the blur near a cut edge is not the blur of the whole image
        self.bounds = (x0 + inner if x0 > 0 else -math.inf, y0 + inner if y0 > 0 else -math.inf,
                       x1 - inner if x1 < width else math.inf, y1 - inner if y1 < height else math.inf)
        self.region = cv2.GaussianBlur(region, (0, 0), sigma, borderType=cv2.BORDER_REPLICATE)
        self.offset = np.array([x0, y0], float)

    def covers(self, centre, angle: float, side: float, scale_tolerance: float = 0.15) -> bool:
        """Whether a crop placed so lies inside the filtered region and shrinks about as much."""
        if abs(side / self.side - 1) > scale_tolerance:
            return False
        half = reach(side, angle) + 1
        x0, y0, x1, y1 = self.bounds
        return x0 <= centre[0] - half and y0 <= centre[1] - half and centre[0] + half <= x1 and centre[1] + half <= y1

    def crop(self, centre, angle: float, side: float) -> tuple[np.ndarray, np.ndarray]:
        """The crop (sampled from the filtered region) and its image-to-crop matrix."""
        matrix = crop_matrix(centre, angle, side, self.size)
        local = matrix.copy()
        local[:, 2] += matrix[:, :2] @ self.offset
        crop = cv2.warpAffine(self.region, local, (self.size, self.size), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)
        return crop, matrix


def levelled_crop(image: np.ndarray, centre, angle: float, side: float, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A size x size crop of `side` image pixels around `centre`, turned by `angle` degrees
    (counter-clockwise, so a head tilted clockwise by `angle` comes out upright), sampled from the
    anti-aliased region it reaches.

    Returns the crop and the 2x3 matrix from image to crop pixels (pixel-index coordinates)."""
    return CropSource(image, centre, side, size, angle=angle).crop(centre, angle, side)


def to_image(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Crop-pixel x, y (first two columns) mapped back to image pixels."""
    inverse = cv2.invertAffineTransform(matrix)
    return np.hstack([points[:, :2], np.ones((len(points), 1))]) @ inverse.T
