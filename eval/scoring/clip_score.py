"""CLIP-T and CLIP-I with a transformers `CLIPModel` loaded from local files only.

- CLIP-T (prompt fidelity): cosine between the CLIP embeddings of the generated image and of its
  prompt, as written in the manifest (a trigger word stays in). Papers often print it x100.
- CLIP-I (DreamBooth's definition): cosine between the CLIP embeddings of the whole generated image
  and of the whole reference image, averaged over the references.

The model comes from `source`, else $IDAVATAR_CLIP, else the HF cache entry of
``openai/clip-vit-large-patch14``; nothing is downloaded. When absent, `MetricUnavailable` says so.
"""
from __future__ import annotations

import hashlib
import os
from functools import cached_property
from pathlib import Path

import numpy as np
from tqdm import tqdm

from eval.cache import ResultCache, sha256_bytes
from eval.faces import FaceInputError
from eval.faces.recognizers import cosine
from eval.scoring import BuildsModelOnFirstUse, MetricUnavailable, torch_inference
from eval.scoring.analysis import ImageRecord, Miss, map_in_process, verified_pixels

DEFAULT_CLIP = "openai/clip-vit-large-patch14"
CLIP_VERSION = "clip-v1"
BATCH = 16


def _model_dir(source: str) -> Path:
    if Path(source).is_dir():
        return Path(source)
    from huggingface_hub import constants

    if not (Path(constants.HF_HUB_CACHE) / f"models--{source.replace('/', '--')}").is_dir():
        raise OSError(f"{source} is not in the HF cache")  # said before importing the downloader (a second)
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(source, local_files_only=True))


def _fingerprint(folder: Path) -> str:
    """Names, sizes and modification times of the model's files: cheap, and changes with the weights."""
    digest = hashlib.sha256()
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        stat = file.stat()
        digest.update(f"{file.relative_to(folder)}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return digest.hexdigest()[:16]


def _features(output) -> np.ndarray:
    tensor = output if hasattr(output, "detach") else output.pooler_output  # transformers <5 returns a tensor
    return tensor.detach().float().numpy()


class ClipScorer(BuildsModelOnFirstUse):
    """Finds the model at once (MetricUnavailable when absent) but loads it only when an embedding is
    not in the cache, so a cached run never pays for CLIP."""

    lazy = ("_loaded",)

    def __init__(self, source: str | os.PathLike | None = None):
        self.source = str(source or os.environ.get("IDAVATAR_CLIP") or DEFAULT_CLIP)
        try:
            self.folder = _model_dir(self.source)
        except (OSError, ValueError) as error:
            raise self._unavailable(error) from None
        self.namespace = f"{CLIP_VERSION}/{self.source}:{_fingerprint(self.folder)}"

    def _unavailable(self, error: Exception) -> MetricUnavailable:
        return MetricUnavailable(
            f"CLIP model '{self.source}' not available offline ({type(error).__name__}); provide a local "
            f"transformers CLIP directory with --clip DIR or IDAVATAR_CLIP=DIR, or put {DEFAULT_CLIP} in the HF cache"
        )

    @cached_property
    def _loaded(self):
        try:
            from transformers import CLIPModel, CLIPProcessor

            return (CLIPModel.from_pretrained(str(self.folder), local_files_only=True).eval(),
                    CLIPProcessor.from_pretrained(str(self.folder), local_files_only=True))
        except (OSError, ValueError) as error:
            raise self._unavailable(error) from None

    def _image_batch(self, misses: list[Miss]) -> np.ndarray:
        """One row per miss, NaN for an image whose bytes changed since they were hashed."""
        from PIL import Image

        model, processor = self._loaded
        images, kept = [], []
        for position, miss in enumerate(misses):
            try:
                images.append(Image.fromarray(verified_pixels(miss)))  # the very bytes the face core hashed
                kept.append(position)
            except FaceInputError:
                pass
        if not images:
            return np.full((len(misses), 1), np.nan, np.float32)
        with torch_inference():
            features = _features(model.get_image_features(**processor(images=images, return_tensors="pt")))
        rows = np.full((len(misses), features.shape[1]), np.nan, np.float32)
        rows[kept] = features
        return rows

    def _text_batch(self, prompts: list[str]) -> np.ndarray:
        model, processor = self._loaded
        inputs = processor(text=prompts, return_tensors="pt", padding=True, truncation=True)
        with torch_inference():
            return _features(model.get_text_features(**inputs))

    def _embed(self, keys: list[str], items: list, embed_batch, cache: ResultCache, progress: bool = False,
               map_stage=map_in_process) -> dict[str, np.ndarray]:
        """{key: embedding}: the cache's, and `embed_batch` run through `map_stage` (in this process,
        or as a Ray stage) on the rest, BATCH items at a time, each batch cached as it comes back."""
        namespace = f"{self.namespace}/{embed_batch.__name__}"
        found = {key: record["vector"] for key, record in cache.get_many(namespace, keys).items()}
        todo = list({key: item for key, item in zip(keys, items) if key not in found}.items())
        with tqdm(total=len(todo), desc="CLIP", unit="item", disable=not progress or not todo) as bar:
            for chunk in map_stage(embed_batch, [item for _, item in todo], BATCH):
                fresh = {todo[index][0]: {"vector": np.asarray(vector, dtype=np.float32)} for index, vector in chunk
                         if np.isfinite(vector).all()}
                cache.put_many(namespace, fresh)
                found.update({key: record["vector"] for key, record in fresh.items()})
                bar.update(len(chunk))
        return found

    def image_embeddings(self, images: dict[str, Path], cache: ResultCache, progress: bool = False,
                         map_stage=map_in_process) -> dict[str, np.ndarray]:
        """{content sha256: embedding} for {content sha256: path}; none for an image that changed."""
        misses = [Miss(path, sha256) for sha256, path in images.items()]
        return self._embed(list(images), misses, self._image_batch, cache, progress, map_stage)

    def text_embeddings(self, prompts: list[str], cache: ResultCache, progress: bool = False) -> dict[str, np.ndarray]:
        """{prompt: embedding}."""
        unique = list(dict.fromkeys(prompts))
        by_hash = self._embed([sha256_bytes(p.encode()) for p in unique], unique, self._text_batch, cache, progress)
        return {prompt: by_hash[sha256_bytes(prompt.encode())] for prompt in unique}


def add_clip_columns(rows: list[dict], images: list[ImageRecord | None], references: list[list[ImageRecord]],
                     scorer: ClipScorer, cache: ResultCache, progress: bool = False, map_stage=map_in_process) -> None:
    """Fill `clip_t` and `clip_i` in each row whose image is readable; the image embeddings go
    through `map_stage` (an engine's), the few prompts' embeddings are computed here."""
    readable = {r.sha256: r.path for r in [*images, *(x for refs in references for x in refs)] if r and r.readable}
    image_vectors = scorer.image_embeddings(readable, cache, progress, map_stage)
    text_vectors = scorer.text_embeddings([row["prompt"] for row in rows], cache, progress)
    for row, image, refs in zip(rows, images, references):
        if image is None or image.sha256 not in image_vectors:
            continue
        vector = image_vectors[image.sha256]
        row["clip_t"] = cosine(vector, text_vectors[row["prompt"]])
        ref_vectors = [image_vectors[r.sha256] for r in refs if r.sha256 in image_vectors]
        if ref_vectors:
            row["clip_i"] = float(np.mean([cosine(vector, ref) for ref in ref_vectors]))
