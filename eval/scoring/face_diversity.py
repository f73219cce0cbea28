"""Face Div (PhotoMaker): mean pairwise LPIPS (AlexNet, v0.1) between the face crops of one
subject x prompt set. Higher means more varied faces. The crops are the face core's aligned 112x112
faces, so framing does not count as diversity.

LPIPS's own linear layers ship inside the `lpips` package. Its AlexNet backbone is torchvision's
ImageNet file, read from $TORCH_HOME/hub/checkpoints only when present (never downloaded, never
random): otherwise `MetricUnavailable` names the exact file to provide.

Beside it, `face_div_features` (eval/scoring/face_features.py) is the same mean over pairs on
EfficientNet-Lite0 features, whose weights ship in a pip package: labelled everywhere as NOT LPIPS.
Both cache each pair's distance by the two crops' content and the scorer's weights and version.
"""
from __future__ import annotations

import itertools
import os
import sys
import warnings
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from eval.cache import ResultCache, sha256_bytes
from eval.models import REGISTER, file_sha256
from eval.scoring import MetricUnavailable
from eval.scoring.analysis import ImageRecord
from eval.scoring.rows import FACE_STATUSES

LPIPS_VERSION = "lpips-alex-0.1-v2"  # v2: pair records under "distance"
SET_COLUMNS = ["system", "subject", "prompt", "prompt_category", "face_div_lpips", "face_div_features"]
BATCH = 64


def alexnet_weights_path() -> Path:
    return torch_hub_dir() / "checkpoints" / REGISTER["lpips_alex"].filename


def torch_hub_dir() -> Path:
    """torch.hub.get_dir(), without importing torch (two seconds of every run's start-up) unless it is."""
    if "torch" in sys.modules:
        return Path(sys.modules["torch"].hub.get_dir())
    default = Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")) / "torch"
    return Path(os.environ.get("TORCH_HOME", default)).expanduser() / "hub"


class PairwiseScorer:
    """A distance between face crops, with its mean over all pairs cached pair by pair. Subclasses
    set `namespace` (the cache key: weights and version) and `_distances(pairs) -> array`."""

    namespace: str

    def _distances(self, pairs: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
        raise NotImplementedError

    def mean_pairwise(self, crops: list[np.ndarray], cache: ResultCache) -> float | None:
        """Mean distance over all pairs of `crops` (uint8 HxWx3); None for fewer than two."""
        if len(crops) < 2:
            return None
        hashes = [sha256_bytes(np.ascontiguousarray(crop).tobytes()) for crop in crops]
        index_pairs = list(itertools.combinations(range(len(crops)), 2))
        keys = ["+".join(sorted((hashes[i], hashes[j]))) for i, j in index_pairs]
        pairs = {key: (crops[i], crops[j]) for key, (i, j) in zip(keys, index_pairs)}
        found = {key: float(record["distance"]) for key, record in cache.get_many(self.namespace, list(pairs)).items()}
        todo = [key for key in pairs if key not in found]
        for start in range(0, len(todo), BATCH):
            batch = todo[start : start + BATCH]
            values = self._distances([pairs[key] for key in batch])
            cache.put_many(self.namespace, {key: {"distance": float(v)} for key, v in zip(batch, values)})
            found.update(zip(batch, map(float, values)))
        return float(np.mean([found[key] for key in keys]))


class FaceLpips(PairwiseScorer):
    """LPIPS on the real AlexNet backbone, built on first use: a run whose pairs are all cached never imports torch."""

    def __init__(self):
        self.weights = alexnet_weights_path()
        if not self.weights.is_file():
            raise MetricUnavailable(
                f"LPIPS backbone {self.weights.name} not found at {self.weights} (torchvision AlexNet ImageNet weights, "
                f"{REGISTER['lpips_alex'].license}); copy the file there or point TORCH_HOME at a folder holding hub/checkpoints/{self.weights.name}"
            )
        self.namespace = f"{LPIPS_VERSION}/{file_sha256(self.weights)[:16]}"

    @cached_property
    def model(self):
        import lpips
        import torch
        import torchvision

        backbone = torchvision.models.alexnet()
        backbone.load_state_dict(torch.load(self.weights, map_location="cpu", weights_only=True))
        with warnings.catch_warnings():  # lpips still passes torchvision's deprecated `pretrained=False`
            warnings.simplefilter("ignore", UserWarning)
            model = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False).eval()
        # lpips keeps AlexNet's feature layers in five slices named by their index in `features`
        for part in (model.net.slice1, model.net.slice2, model.net.slice3, model.net.slice4, model.net.slice5):
            for index, module in part.named_children():
                module.load_state_dict(backbone.features[int(index)].state_dict())
        return model

    def _distances(self, pairs: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
        import torch

        def tensor(crops):
            return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 127.5 - 1.0

        with torch.inference_mode():
            return self.model(tensor([a for a, _ in pairs]), tensor([b for _, b in pairs])).flatten().numpy()


def face_div_sets(scores: pd.DataFrame, images: list[ImageRecord | None], scorers: dict, cache: ResultCache,
                  progress: bool = False) -> pd.DataFrame:
    """One row per system x subject x prompt set with two or more faces; `scorers` maps a column
    (face_div_lpips, face_div_features) to its scorer, and a column without one stays empty."""
    with_face = scores["status"].isin(FACE_STATUSES).to_numpy()
    sets = []
    groups = scores[with_face].groupby(["system", "subject", "prompt"], sort=False)
    for (system, subject, prompt), group in tqdm(groups, desc="Face Div", unit="set", disable=not progress):
        if len(group) < 2:
            continue
        crops = [images[i].aligned for i in group.index]
        values = {column: scorer.mean_pairwise(crops, cache) for column, scorer in scorers.items()}
        sets.append({"system": system, "subject": subject, "prompt": prompt,
                     "prompt_category": group["prompt_category"].iloc[0], **values})
    return pd.DataFrame(sets, columns=SET_COLUMNS)
