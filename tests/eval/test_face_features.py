"""Face Div (features) on real weights and the bundled photos: never LPIPS, but it must rank edited
copies of a photo as less diverse than other real photos of the same person."""
import itertools

import numpy as np
import pytest
from PIL import Image

from eval.demo.build import AUGMENTATIONS
from eval.faces import FaceAnalyzer
from eval.cache import ResultCache
from eval.scoring.face_features import FaceFeatures


def test_the_weights_are_the_real_imagenet_network():
    from skimage import data

    probabilities = FaceFeatures().classify([data.chelsea()])[0]
    assert 281 <= int(np.argmax(probabilities)) <= 285, "a cat photo must read as one of ImageNet's cats"


def test_copies_are_less_diverse_than_new_photos_of_the_person(faces_dir, tmp_path):
    analyzer = FaceAnalyzer(recognizers=(), with_pose=False, with_expression=False)
    features = FaceFeatures()
    photos = [Image.open(path).convert("RGB") for path in sorted(faces_dir.glob("obama_*.jpg"))]
    copies = [photos[0]] + [augment(photos[0]) for augment in AUGMENTATIONS.values()]
    real = [result.main_face.aligned for result in analyzer.analyze(photos)]
    edited = [result.main_face.aligned for result in analyzer.analyze(copies)]
    cache = ResultCache(tmp_path / "cache.sqlite")
    real_pairs = [features.mean_pairwise(list(pair), cache) for pair in itertools.combinations(real, 2)]
    copy_pairs = [features.mean_pairwise(list(pair), cache) for pair in itertools.combinations(edited, 2)]
    assert max(copy_pairs) < min(real_pairs), (copy_pairs, real_pairs)
    assert features.mean_pairwise(real[:1], cache) is None
    assert features.mean_pairwise(real, cache) == np.mean(real_pairs)  # cached pairs, same mean


def test_the_demo_summary_reports_it_with_copies_lowest(demo_scores):
    systems = demo_scores.summary["systems"]
    copy, ideal, impostor = (systems[name]["metrics"]["face_div_features"] for name in ("copy-paste", "ideal", "impostor"))
    assert copy["ci_high"] < impostor["ci_low"] and copy["ci_high"] < ideal["mean"]
    assert all("face_div_features" not in system["unavailable"] for system in systems.values())


def count_network_crops(metric, monkeypatch) -> list[int]:
    """The number of crops of each batch `metric` sends through its network."""
    batches = []
    real = metric.layer_features
    monkeypatch.setattr(metric, "layer_features", lambda crops: batches.append(len(crops)) or real(crops))
    return batches


def test_the_mean_over_pairs_equals_the_per_pair_distance_with_one_pass_per_crop(real_crops, monkeypatch):
    features = FaceFeatures()
    crops = real_crops[:6]

    def per_pair(a, b):  # the definition, one pair at a time: stage means of channel-summed squared differences
        return np.mean([((x - y) ** 2).sum(axis=1).mean() for x, y in zip(features.layer_features([a]),
                                                                            features.layer_features([b]))])

    expected = np.mean([per_pair(a, b) for a, b in itertools.combinations(crops, 2)])
    batches = count_network_crops(features, monkeypatch)
    cache = ResultCache(None)
    assert features.mean_pairwise(crops, cache) == pytest.approx(expected, rel=1e-6, abs=0)
    assert sum(batches) == len(crops)  # each crop once, not once per pair
    assert features.mean_pairwise(crops[::-1], cache) == pytest.approx(expected, rel=1e-6) and sum(batches) == 6


def test_copies_of_a_crop_pass_the_network_once_and_are_zero_apart(real_crops, monkeypatch):
    features = FaceFeatures()
    a, b = real_crops[:2]
    batches = count_network_crops(features, monkeypatch)
    mean = features.mean_pairwise([a, b, a.copy(), b.copy()], ResultCache(None))
    assert sum(batches) == 2
    # six pairs: (a, a) and (b, b) at 0, four (a, b) at d(a, b)
    assert mean == pytest.approx(4 / 6 * features.mean_pairwise([a, b], ResultCache(None)), rel=1e-9)
