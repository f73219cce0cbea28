"""Pose and expression on real photos: mirror, in-plane rotation, a known happy face."""
import numpy as np
import pytest
from PIL import Image, ImageOps

from eval.faces import default_threshold, similarity


def main_face(analyzer, image):
    result = analyzer.analyze_one(image)
    assert result.ok, result.error
    return result.main_face


@pytest.mark.parametrize("stem", ["obama_oval", "biden", "sunak"])
def test_mirror_keeps_identity_and_flips_yaw_and_roll(analyzer, bundled, faces_dir, stem):
    original = bundled[stem].main_face
    mirrored = main_face(analyzer, ImageOps.mirror(Image.open(faces_dir / f"{stem}.jpg")))
    for name in ("sface", "dlib"):
        assert similarity(name, original.embeddings[name], mirrored.embeddings[name]) > default_threshold(name)
    # Flip-averaged detection makes the pipeline mirror-symmetric, so the tolerance is tight.
    assert mirrored.pose.yaw == pytest.approx(-original.pose.yaw, abs=0.5)
    assert mirrored.pose.roll == pytest.approx(-original.pose.roll, abs=0.5)
    assert mirrored.pose.pitch == pytest.approx(original.pose.pitch, abs=0.5)
    if abs(original.pose.yaw) > 1:
        assert np.sign(mirrored.pose.yaw) == -np.sign(original.pose.yaw)


@pytest.mark.parametrize("angle", [-30, -15, 10, 25])
def test_in_plane_rotation_shows_as_roll(analyzer, bundled, faces_dir, angle):
    """Turning the picture clockwise by `angle` degrees adds `angle` to roll (within 3 degrees)."""
    original = bundled["macron_2025"].main_face
    rotated = Image.open(faces_dir / "macron_2025.jpg").rotate(-angle, expand=True, resample=Image.BICUBIC)
    face = main_face(analyzer, rotated)
    assert face.pose.roll - original.pose.roll == pytest.approx(angle, abs=3.0)


def test_astronaut_is_happy(analyzer):
    from skimage import data

    face = main_face(analyzer, data.astronaut())
    assert face.expression.label == "happy", face.expression.scores
    assert sum(face.expression.scores.values()) == pytest.approx(1.0, abs=1e-3)
