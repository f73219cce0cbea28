"""Face Div (PhotoMaker): mean pairwise LPIPS (AlexNet, v0.1) between the face crops of one
subject x prompt set. Higher means more varied faces. The crops are the face core's aligned 112x112
faces, so framing does not count as diversity.

LPIPS's own linear layers ship inside the `lpips` package. Its AlexNet backbone is torchvision's
ImageNet file, read from $TORCH_HOME/hub/checkpoints only when present (never downloaded, never
random): otherwise `MetricUnavailable` names the exact file to provide.

Beside it, `face_div_features` (eval/scoring/face_features.py) is the same mean over pairs on
EfficientNet-Lite0 features, whose weights ship in a pip package: labelled everywhere as NOT LPIPS.
Both pass each crop of a set through their network once, take every pair's distance from those
features (`PairwiseScorer.distance_matrix`), and cache each pair's distance by the two crops'
content and the scorer's weights and version.
"""
from __future__ import annotations

import itertools
import os
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from eval.cache import ResultCache, sha256_bytes
from eval.models import REGISTER, file_sha256
from eval.scoring import BuildsModelOnFirstUse, MetricUnavailable, torch_inference
from eval.scoring.analysis import ImageRecord, map_in_process
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


@dataclass
class PendingPairs:
    """The pairs of one set of crops: their cache keys (by content), the positions of their two
    crops (a copy counts as its first occurrence), the distances the cache holds, and the crops a
    pair still missing its distance involves."""

    keys: list[str]
    index_pairs: list[tuple[int, int]]
    found: dict[str, float]
    needed: list[int]


class PairwiseScorer(BuildsModelOnFirstUse):
    """A distance between face crops of the LPIPS form: per layer, channel-normalised (and weighted)
    features; squared differences summed over channels, averaged over positions; layers summed
    (`layers_combined = "sum"`) or averaged ("mean"). Its mean over all pairs of a set is computed
    from per-crop features — one network pass per crop, never per pair — and cached pair by pair.
    Subclasses set `namespace` (the cache key: weights and version) and `layer_features(crops)`."""

    namespace: str
    layers_combined = "sum"

    def layer_features(self, crops: list[np.ndarray]) -> list[np.ndarray]:
        """Per layer, an N x C x H x W array whose pair distance is mean_hw ||a - b||^2 over channels."""
        raise NotImplementedError

    def distance_matrix(self, crops: list[np.ndarray]) -> np.ndarray:
        """N x N distances between all `crops` (uint8 HxWx3), from their features: for each layer,
        ||a - b||^2 = ||a||^2 + ||b||^2 - 2 a.b over the flattened features, in float64."""
        batches = [self.layer_features(crops[start : start + BATCH]) for start in range(0, len(crops), BATCH)]
        total = np.zeros((len(crops), len(crops)))
        for layer in zip(*batches):
            features = np.concatenate(layer)
            positions = features.shape[2] * features.shape[3]
            flat = features.reshape(len(crops), -1).astype(np.float64)
            gram = flat @ flat.T
            squares = np.diag(gram)
            total += (squares[:, None] + squares[None, :] - 2 * gram) / positions
        if self.layers_combined == "mean":
            total /= len(batches[0]) if batches else 1
        np.fill_diagonal(total, 0.0)
        return np.maximum(total, 0.0)  # rounding can take an identical pair a hair below zero

    def set_distances(self, sets: list[np.ndarray]) -> list[np.ndarray]:
        """`distance_matrix` of each N x H x W x 3 stack of crops: what an engine's Face Div stage runs."""
        return [self.distance_matrix(list(crops)) for crops in sets]

    def pending(self, crops: list[np.ndarray], cache: ResultCache) -> PendingPairs:
        hashes = [sha256_bytes(np.ascontiguousarray(crop).tobytes()) for crop in crops]
        first = {}  # copies of one crop go through the network once, as its first position
        positions = [first.setdefault(sha256, position) for position, sha256 in enumerate(hashes)]
        index_pairs = [(positions[i], positions[j]) for i, j in itertools.combinations(range(len(crops)), 2)]
        keys = ["+".join(sorted((hashes[i], hashes[j]))) for i, j in index_pairs]
        found = {key: float(record["distance"]) for key, record in cache.get_many(self.namespace, keys).items()}
        needed = sorted({i for key, pair in zip(keys, index_pairs) if key not in found for i in pair})
        return PendingPairs(keys, index_pairs, found, needed)

    def complete(self, pairs: PendingPairs, matrix: np.ndarray | None, cache: ResultCache) -> float:
        """The set's mean distance, once `matrix` (the `distance_matrix` of the needed crops, in
        their order) has filled and cached the missing pairs."""
        if pairs.needed:
            at = {crop: row for row, crop in enumerate(pairs.needed)}
            fresh = {key: float(matrix[at[i], at[j]]) for key, (i, j) in zip(pairs.keys, pairs.index_pairs)
                     if key not in pairs.found}
            cache.put_many(self.namespace, {key: {"distance": value} for key, value in fresh.items()})
            pairs.found.update(fresh)
        return float(np.mean([pairs.found[key] for key in pairs.keys]))

    def mean_pairwise(self, crops: list[np.ndarray], cache: ResultCache) -> float | None:
        """Mean distance over all pairs of `crops` (uint8 HxWx3); None for fewer than two."""
        if len(crops) < 2:
            return None
        pairs = self.pending(crops, cache)
        matrix = self.distance_matrix([crops[i] for i in pairs.needed]) if pairs.needed else None
        return self.complete(pairs, matrix, cache)


class FaceLpips(PairwiseScorer):
    """LPIPS on the real AlexNet backbone, built on first use: a run whose pairs are all cached never imports torch."""

    lazy = ("model",)

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

    def layer_features(self, crops: list[np.ndarray]) -> list[np.ndarray]:
        """LPIPS's own per-layer features: AlexNet's five ReLU outputs, unit-normalised along channels
        and scaled by the square root of its learned (non-negative) channel weights, so that
        mean_hw ||a - b||^2, summed over layers, is lpips.LPIPS's distance."""
        import lpips
        import torch

        batch = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        with torch_inference():
            outputs = self.model.net(self.model.scaling_layer(batch))
            return [(lpips.normalize_tensor(output) * lin.model[-1].weight.sqrt()).numpy()
                    for output, lin in zip(outputs, self.model.lins)]


def face_div_sets(scores: pd.DataFrame, images: list[ImageRecord | None], crops_of: Callable[[list], list],
                  scorers: dict, cache: ResultCache, progress: bool = False, map_stage=map_in_process) -> pd.DataFrame:
    """One row per system x subject x prompt set with two or more faces; `scorers` maps a column
    (face_div_lpips, face_div_features) to its scorer, and a column without one stays empty.
    `crops_of(records)` gives the records' aligned crops (`CachedFaceAnalysis.crops`): they are read
    a set at a time, so the driver never holds a run's crops.

    Per scorer, the sets with pairs the cache lacks go through `map_stage` (an engine's: in this
    process, or a Ray stage), one set per batch: there the set's crops pass the network once each
    and only the N x N distances come back; the driver caches them and takes each set's mean."""
    with_face = scores["status"].isin(FACE_STATUSES).to_numpy()
    groups = [(key, group) for key, group in scores[with_face].groupby(["system", "subject", "prompt"], sort=False)
              if len(group) >= 2]

    def crops(position: int) -> list[np.ndarray]:
        return [crop for crop in crops_of([images[i] for i in groups[position][1].index]) if crop is not None]

    pending: dict[str, list[PendingPairs]] = {column: [] for column in scorers}
    for position in range(len(groups)):  # each set's crops read once for every scorer's cache lookup
        set_crops = crops(position)
        for column, scorer in scorers.items():
            pending[column].append(scorer.pending(set_crops, cache))
    values: dict[str, list] = {}
    for column, scorer in scorers.items():
        pairs_of = pending[column]
        todo = [position for position, pairs in enumerate(pairs_of) if pairs.needed]
        values[column] = [None if pairs.needed else scorer.complete(pairs, None, cache) for pairs in pairs_of]
        stacks = (np.stack([set_crops[i] for i in pairs_of[position].needed])
                  for position in todo for set_crops in [crops(position)])
        with tqdm(total=len(todo), desc=f"Face Div ({column})", unit="set", disable=not progress or not todo) as bar:
            for chunk in map_stage(scorer.set_distances, stacks, 1):
                for index, matrix in chunk:
                    position = todo[index]
                    values[column][position] = scorer.complete(pairs_of[position], matrix, cache)
                bar.update(len(chunk))
    sets = [{"system": system, "subject": subject, "prompt": prompt,
             "prompt_category": group["prompt_category"].iloc[0],
             **{column: values[column][position] for column in scorers}}
            for position, ((system, subject, prompt), group) in enumerate(groups)]
    return pd.DataFrame(sets, columns=SET_COLUMNS)
