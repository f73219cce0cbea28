"""Canonical orientation: a photo and its mirror image are analysed as the same pixels, so every
result on the mirror is exactly the mirrored result."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from eval.faces import FaceAnalyzer, load_image
from eval.faces.detector import unmirror
from eval.faces.orientation import canonical, reads_mirrored

images = arrays(np.uint8, st.tuples(st.integers(1, 24), st.integers(1, 24), st.just(3)))


@given(images)
@settings(max_examples=200, deadline=None)
def test_an_image_and_its_mirror_have_one_canonical_form(image):
    mirror = np.ascontiguousarray(image[:, ::-1])
    (frame, mirrored), (mirror_frame, mirror_mirrored) = canonical(image), canonical(mirror)
    if np.array_equal(image, mirror):  # symmetric: nothing to choose
        assert not mirrored and not mirror_mirrored
    elif mirrored == mirror_mirrored:  # only when every moment is exactly zero: read as stored
        assert not mirrored
        assert not reads_mirrored(image) and not reads_mirrored(mirror)
    else:
        assert np.array_equal(frame, mirror_frame)


def test_the_mirror_of_a_photo_gets_the_mirrored_analysis_exactly(faces_dir):
    analyzer = FaceAnalyzer(recognizers=("sface",), with_expression=False)
    for path in sorted(faces_dir.glob("*.jpg")):
        rgb = load_image(path)
        width = rgb.shape[1]
        original, mirror = (result.main_face for result in analyzer.analyze([rgb, np.ascontiguousarray(rgb[:, ::-1])]))
        assert (mirror.pose.yaw, mirror.pose.pitch, mirror.pose.roll) == (-original.pose.yaw, original.pose.pitch, -original.pose.roll)
        assert np.allclose(unmirror(mirror.landmarks, width), original.landmarks, atol=1e-9, rtol=0)
        x0, y0, x1, y1 = original.bbox
        assert np.allclose(mirror.bbox, (width - 1 - x1, y0, width - 1 - x0, y1), atol=1e-9, rtol=0)


def test_the_meshes_side_by_side_give_one_mesh_s_bits(faces_dir):
    """A chunk's faces are fitted by one single-threaded mesh per CPU; one mesh alone gives the same."""
    paths = sorted(faces_dir.glob("*.jpg"))
    analyzer = FaceAnalyzer(recognizers=(), with_expression=False)
    side_by_side = analyzer.analyze(paths)
    analyzer.meshes = analyzer.meshes[:1]
    alone = analyzer.analyze(paths)
    for a, b in zip(side_by_side, alone):
        assert a.main_face.pose == b.main_face.pose and np.array_equal(a.main_face.landmarks, b.main_face.landmarks)
        assert a.main_face.bbox == b.main_face.bbox and np.array_equal(a.main_face.aligned, b.main_face.aligned)
