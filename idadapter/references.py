"""Reference sets of N images per identity.

Training pads a short set with flipped, rotated and recoloured copies (the paper's augmentation);
inference duplicates the single reference photo N times, as the paper does.
"""
from __future__ import annotations

import random

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
