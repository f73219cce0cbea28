"""LPIPS Face Div and CLIP-T/CLIP-I: unavailable without their weights (naming what to provide), and the
real loading and scoring code exercised with stand-in weights. Only mechanics are asserted: numbers
from stand-in weights are never reported."""
import itertools
import json

import numpy as np
import pytest
import torch

from eval.cache import ResultCache
from eval.files import sha256_file
from eval.score import score_manifest
from eval.scoring import MetricUnavailable
from eval.scoring.clip_score import ClipScorer
from eval.scoring.face_diversity import FaceLpips
from tests.eval.test_face_features import count_network_crops


def test_lpips_without_backbone_names_the_exact_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(MetricUnavailable) as error:
        FaceLpips()
    assert str(tmp_path / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth") in str(error.value)


def test_lpips_loads_the_backbone_from_torch_home_and_caches_pairs(torch_home_with_alexnet, real_crops, monkeypatch):
    metric = FaceLpips()
    saved = torch.load(torch_home_with_alexnet, weights_only=True)
    assert torch.equal(metric.model.net.slice1[0].weight, saved["features.0.weight"])
    assert torch.equal(dict(metric.model.net.slice5.named_children())["10"].weight, saved["features.10.weight"])
    crops = real_crops[:5]
    cache = ResultCache(None)
    assert metric.mean_pairwise([crops[0], crops[0].copy()], cache) == pytest.approx(0.0, abs=1e-6)
    assert metric.mean_pairwise(crops[:1], cache) is None

    def tensor(crop):
        return torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 127.5 - 1.0

    with torch.inference_mode():  # lpips's own forward, one pair at a time
        expected = np.mean([float(metric.model(tensor(a), tensor(b))) for a, b in itertools.combinations(crops, 2)])
    batches = count_network_crops(metric, monkeypatch)
    first = metric.mean_pairwise(crops, cache)
    assert first == pytest.approx(expected, rel=1e-6, abs=0) and first > 0
    assert sum(batches) == len(crops)  # each crop through AlexNet once, not once per pair
    assert metric.mean_pairwise(crops[::-1], cache) == pytest.approx(first) and sum(batches) == len(crops)


def test_clip_absent_is_unavailable_with_what_to_provide(tmp_path):
    with pytest.raises(MetricUnavailable, match="--clip DIR or IDAVATAR_CLIP"):
        ClipScorer(tmp_path / "not-a-model")


def test_clip_scores_image_text_and_image_image(tiny_clip, faces_dir):
    scorer = ClipScorer(tiny_clip)
    cache = ResultCache(None)
    a, b = faces_dir / "sunak.jpg", faces_dir / "biden.jpg"
    images = {sha256_file(a): a, sha256_file(b): b}  # keyed by content: the bytes are checked against it
    vectors = scorer.image_embeddings(images, cache)
    assert vectors[sha256_file(a)].shape == (16,) and not np.allclose(vectors[sha256_file(a)], vectors[sha256_file(b)])
    texts = scorer.text_embeddings(["a photo of a person", "a painting", "a photo of a person"], cache)
    assert list(texts) == ["a photo of a person", "a painting"]
    assert not np.allclose(texts["a photo of a person"], texts["a painting"])
    assert cache.count("clip-v1/") == 4


@pytest.mark.slow
def test_scoring_fills_clip_and_face_div_when_the_models_are_there(demo_manifest, eval_analyzer, score_cache,
                                                                 tiny_clip, torch_home_with_alexnet, tmp_path):
    result = score_manifest(demo_manifest, tmp_path / "scores", analyzer=eval_analyzer, cache=score_cache,
                            clip_model=str(tiny_clip), progress=False)
    scores = result.scores
    assert scores["clip_t"].notna().all() and scores["clip_i"].notna().all()
    # an image identical to its reference would give CLIP-I 1; the colour-jittered copy is close to it
    jitter = scores[scores["image"].str.endswith("colour-jitter.png")]
    assert (jitter["clip_i"] > 0.9).all()
    systems = result.summary["systems"]
    assert systems["copy-paste"]["metrics"]["face_div_lpips"]["n"] == 3  # one set per subject
    assert systems["ideal"]["metrics"]["face_div_lpips"]["n"] == 1  # only obama has 2+ ideal images
    assert "face_div_lpips" not in systems["ideal"]["unavailable"]
    assert {m["id"] for m in result.summary["models"]} >= {"clip", "lpips_alex"}
    json.dumps(result.summary, allow_nan=False)
