"""Reference sets of N images per identity, each cropped to the face.

Training pads a short set with flipped, rotated and recoloured copies (the paper's augmentation);
inference duplicates the single reference photo N times, as the paper does.
"""
from __future__ import annotations

import random

import numpy as np
from PIL import Image, ImageEnhance, ImageOps


def augmented(image: Image.Image, rng: random.Random) -> Image.Image:
    """A flipped, slightly rotated and recoloured copy of a reference image."""
    out = ImageOps.mirror(image) if rng.random() < 0.5 else image
    out = out.rotate(rng.uniform(-15, 15), resample=Image.Resampling.BILINEAR, fillcolor=(0, 0, 0))
    out = ImageEnhance.Brightness(out).enhance(rng.uniform(0.8, 1.2))
    out = ImageEnhance.Contrast(out).enhance(rng.uniform(0.8, 1.2))
    return ImageEnhance.Color(out).enhance(rng.uniform(0.7, 1.3))


def reference_plan(candidates: list[int], n: int, rng: random.Random) -> list[tuple[int, bool]]:
    """n (image index, augment?) pairs: up to n distinct candidates, padded with augmented repeats."""
    if not candidates:
        raise ValueError("a reference set needs at least one image")
    plan = [(index, False) for index in rng.sample(candidates, min(n, len(candidates)))]
    plan += [(rng.choice(candidates), True) for _ in range(n - len(plan))]
    return plan


def duplicated_references(image: Image.Image, n: int) -> list[Image.Image]:
    return [image] * n


def face_crop(image: Image.Image, landmarks: np.ndarray, scale: float | None) -> Image.Image:
    """A square around the face for CLIP: centred on the five landmarks, `scale` × the eye-to-mouth
    distance wide (3.5 takes in the head and a little hair); None keeps the whole image."""
    if scale is None:
        return image
    landmarks = np.asarray(landmarks, dtype=np.float64)
    eye_to_mouth = np.linalg.norm(landmarks[3:].mean(axis=0) - landmarks[:2].mean(axis=0))
    side = max(round(scale * eye_to_mouth), 16)
    centre_x, centre_y = landmarks.mean(axis=0)
    left, top = round(centre_x - side / 2), round(centre_y - side / 2)
    return image.crop((left, top, left + side, top + side))
