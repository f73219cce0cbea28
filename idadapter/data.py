"""Training data: a folder of identity folders, each with photos of one person and optional captions.

    DATA_ROOT/
      <identity>/                 one person; the folder name is the identity's id
        identity.json             optional: {"class_noun": "woman"}  (default "person")
        0001.jpg                  a photo (jpg, jpeg, png, webp)
        0001.txt                  optional caption, e.g. "a photo of a woman smiling on a beach"
        ...                       (no caption: "a photo of a <class noun>")

One sample = one target photo of an identity, N references drawn from the identity's other photos
(cropped to the face; padded with flipped / rotated / recoloured copies of those other photos when
there are fewer), the mean identity feature of the references, and the caption with "<class noun> is
sks" appended. The target is never among its own references, so the adapter cannot learn to copy
it: an identity with a single usable photo has no references and is left out, with a warning. An
image that cannot be read or holds no detectable face is reported by name and left out; the rest of
the set is used.
"""
from __future__ import annotations

import json
import logging
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler
from tqdm import tqdm

from eval.faces import FaceInputError, load_image

from .identity_loss import FaceIdentity, image_tensor
from .identity_token import identity_prompt
from .references import augmented, face_crop, reference_plan

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}


@dataclass
class IdentityImage:
    path: Path
    identity: str
    class_noun: str
    caption: str
    embedding: np.ndarray  # the recognizer's normalised feature of its main face
    landmarks: np.ndarray  # that face's five landmarks, in the image's pixels


def _read_rgb(path: Path) -> Image.Image:
    """The photo upright (EXIF orientation applied) in RGB; FaceInputError names a bad file."""
    return Image.fromarray(load_image(path))


def identity_folders(root: str | Path) -> list[Path]:
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: training data folder not found")
    return sorted(p for p in root.iterdir() if p.is_dir())


def scan_identity_folders(root: str | Path, face_identity: FaceIdentity,
                          identities: set[str] | None = None) -> list[IdentityImage]:
    """Every usable photo under `root` (of `identities` only, when given), with its identity feature
    (computed once, without gradient)."""
    folders = [p for p in identity_folders(root) if identities is None or p.name in identities]
    paths = [(folder, p) for folder in folders for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
    if not paths:
        raise ValueError(f"{root}: no identity folders with images (see idadapter.data for the layout)")
    images = []
    for folder, path in tqdm(paths, desc="identity features", unit="img"):
        meta_file = folder / "identity.json"
        class_noun = json.loads(meta_file.read_text()).get("class_noun", "person") if meta_file.exists() else "person"
        try:
            rgb = load_image(path)
        except FaceInputError as error:
            log.warning("%s: skipped, cannot read the image (%s)", path, error.reason)
            continue
        image = image_tensor(rgb)
        (landmarks,) = face_identity.landmarks(image)
        if landmarks is None:
            log.warning("%s: skipped, no face found", path)
            continue
        embedding = face_identity.mean_identity(image, [landmarks])
        caption_file = path.with_suffix(".txt")
        caption = caption_file.read_text().strip() if caption_file.exists() else f"a photo of a {class_noun}"
        images.append(IdentityImage(path, folder.name, class_noun, caption, embedding.cpu().numpy(), landmarks))
    if not images:
        raise ValueError(f"{root}: no image with a detectable face")
    return images


def trainable_images(images: list[IdentityImage]) -> list[IdentityImage]:
    """The images of identities with at least two photos (a target's references are its other photos)."""
    counts = Counter(image.identity for image in images)
    for identity in sorted(name for name, count in counts.items() if count < 2):
        log.warning("identity %r left out of training: one usable photo, and a target is never its own reference",
                    identity)
    kept = [image for image in images if counts[image.identity] >= 2]
    if not kept:
        raise ValueError("no identity has two usable photos: each target needs references other than itself")
    return kept


def _square(image: Image.Image, size: int) -> Image.Image:
    scale = size / min(image.size)
    resized = image.resize((max(size, round(image.width * scale)), max(size, round(image.height * scale))),
                           Image.Resampling.BICUBIC)
    left, top = (resized.width - size) // 2, (resized.height - size) // 2
    return resized.crop((left, top, left + size, top + size))


class IdentityDataset(Dataset):
    """Map-style: a key is (target image index, sample seed); the seed fixes the reference draw."""

    def __init__(self, images: list[IdentityImage], tokenizer, feature_extractor, resolution: int,
                 num_references: int, identity_token: str = "sks", reference_crop_scale: float | None = 3.5):
        self.images = trainable_images(images)
        self.tokenizer = tokenizer
        self.feature_extractor = feature_extractor
        self.resolution = resolution
        self.num_references = num_references
        self.identity_token = identity_token
        self.reference_crop_scale = reference_crop_scale
        self.by_identity: dict[str, list[int]] = {}
        for index, image in enumerate(self.images):
            self.by_identity.setdefault(image.identity, []).append(index)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        index, seed = key
        rng = random.Random(seed)
        target = self.images[index]
        siblings = self.by_identity[target.identity]
        candidates = [i for i in siblings if i != index]
        plan = reference_plan(candidates, self.num_references, rng)
        references = [face_crop(_read_rgb(self.images[i].path), self.images[i].landmarks, self.reference_crop_scale)
                      for i, _ in plan]
        references = [augmented(image, rng) if augment else image for image, (_, augment) in zip(references, plan)]
        identity = np.mean([self.images[i].embedding for i, _ in plan], axis=0)
        pixels = np.asarray(_square(_read_rgb(target.path), self.resolution), dtype=np.float32) / 127.5 - 1
        prompt = identity_prompt(target.caption, target.class_noun, self.identity_token)
        return {
            "pixel_values": torch.from_numpy(pixels).permute(2, 0, 1),
            "reference_pixel_values": self.feature_extractor(images=references, return_tensors="pt").pixel_values,
            "identity_feature": torch.nn.functional.normalize(torch.from_numpy(identity).float(), dim=-1),
            "input_ids": self.tokenizer(prompt, padding="max_length", max_length=self.tokenizer.model_max_length,
                                        truncation=True, return_tensors="pt").input_ids[0],
        }


class StepBatchSampler(Sampler):
    """Batches for steps start..total-1; each step's draw depends only on (seed, step, process).

    So a resumed run sees exactly the batches the uninterrupted run would have seen.
    """

    def __init__(self, dataset_size: int, batch_size: int, seed: int, start_step: int, total_steps: int,
                 process_index: int = 0):
        self.dataset_size, self.batch_size, self.seed = dataset_size, batch_size, seed
        self.start_step, self.total_steps, self.process_index = start_step, total_steps, process_index

    def __len__(self) -> int:
        return max(0, self.total_steps - self.start_step)

    def __iter__(self):
        for step in range(self.start_step, self.total_steps):
            rng = np.random.default_rng([self.seed, step, self.process_index])
            indices = rng.integers(0, self.dataset_size, self.batch_size)
            seeds = rng.integers(0, 2**31, self.batch_size)
            yield [(int(i), int(s)) for i, s in zip(indices, seeds)]
