"""Property tests for the alignment and pose maths."""
import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from eval.faces import ARCFACE_TEMPLATE, align_face, similarity_transform
from eval.faces.crops import levelled_crop, to_image
from eval.faces.detector import eye_line_angle
from eval.faces.pose import CHEEKS, EYE_CORNERS, RIGID_PAIRS, estimate_pose, euler_from_rotation, mesh_roll

angles = st.floats(-60, 60)


def rotation(yaw, pitch, roll):
    y, p, r = np.radians([yaw, -pitch, roll])
    rx = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
    ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    return rz @ ry @ rx


def frontal_mesh(seed: int) -> np.ndarray:
    """A random face mesh in the canonical frontal pose: left-right symmetric pairs, and the eye
    corners and cheek points at one depth."""
    rng = np.random.default_rng(seed)
    points = rng.normal(0, 40, (468, 3))
    points[CHEEKS + EYE_CORNERS, 2] = 5.0
    points[CHEEKS, 1] = np.abs(points[CHEEKS, 1]) + 30  # cheeks below the eye corners
    points[EYE_CORNERS, 1] = -np.abs(points[EYE_CORNERS, 1]) - 10
    points[CHEEKS[2], 1], points[CHEEKS[3], 1] = points[CHEEKS[0], 1], points[CHEEKS[1], 1]
    for left, right in RIGID_PAIRS:
        points[left, 0] = -abs(points[left, 0]) - 5  # the image-left member on the left
        points[right] = points[left] * [-1, 1, 1]
    return points


def eye_points(rot):
    """The two outer eye corners of a canonical face (image-left, image-right) turned by `rot`."""
    return (np.array([[-30.0, 0, 0], [30.0, 0, 0]]) @ rot.T)[:, :2]


@given(yaw=angles, pitch=angles, roll=st.floats(-170, 170))
def test_euler_decomposition_round_trips(yaw, pitch, roll):
    pose = euler_from_rotation(rotation(yaw, pitch, roll))
    assert np.allclose([pose.yaw, pose.pitch, pose.roll], [yaw, pitch, roll], atol=1e-6)


@settings(max_examples=60)
@given(yaw=st.floats(-60, 60), pitch=st.floats(-45, 45), roll=st.floats(-90, 90), seed=st.integers(0, 1000))
def test_pose_is_recovered_from_a_turned_canonical_mesh(yaw, pitch, roll, seed):
    mesh = frontal_mesh(seed)
    assert np.allclose(list(estimate_pose(mesh).as_dict().values()), 0, atol=1e-6)
    pose = estimate_pose(mesh @ rotation(yaw, pitch, roll).T)
    assert np.allclose([pose.yaw, pose.pitch, pose.roll], [yaw, pitch, roll], atol=1e-6)


@settings(max_examples=60)
@given(yaw=st.floats(-60, 60), pitch=st.floats(-45, 45), roll=st.floats(-90, 90), seed=st.integers(0, 1000))
def test_mirrored_mesh_flips_yaw_and_roll(yaw, pitch, roll, seed):
    mesh = frontal_mesh(seed) @ rotation(yaw, pitch, roll).T
    mirrored = mesh * [-1, 1, 1]
    for left, right in RIGID_PAIRS:
        mirrored[[left, right]] = mirrored[[right, left]]
    original, flipped = estimate_pose(mesh), estimate_pose(mirrored)
    assert np.allclose([flipped.yaw, flipped.pitch, flipped.roll], [-original.yaw, original.pitch, -original.roll], atol=1e-6)


@settings(max_examples=40)
@given(angle=st.floats(-60, 60), side=st.floats(40, 900), x=st.floats(0, 999), y=st.floats(0, 799))
def test_levelled_crop_maps_back_to_the_image(angle, side, x, y):
    image = np.zeros((800, 1000, 3), np.uint8)
    _, matrix = levelled_crop(image, (x, y), angle, side, 192)
    corners = np.array([[0.0, 0.0], [191.0, 0.0], [0.0, 191.0], [191.0, 191.0]])
    back = to_image(corners, matrix)
    assert np.allclose(np.linalg.norm(back[1] - back[0]), side * 191 / 192, rtol=1e-6)
    assert np.allclose(back.mean(axis=0), (x, y), atol=1e-4)
    assert math.isclose(eye_line_angle(back[:2]), angle, abs_tol=1e-6)  # the crop lies along a head tilted by `angle`


@given(
    angle=st.floats(-math.pi, math.pi),
    scale=st.floats(0.2, 5.0),
    shift=st.tuples(st.floats(-500, 500), st.floats(-500, 500)),
)
def test_similarity_transform_inverts_a_known_similarity(angle, scale, shift):
    c, s = math.cos(angle), math.sin(angle)
    known = scale * np.array([[c, -s], [s, c]])
    source = ARCFACE_TEMPLATE @ known.T + np.array(shift)
    recovered = similarity_transform(source, ARCFACE_TEMPLATE)
    mapped = np.hstack([source, np.ones((5, 1))]) @ recovered.T
    assert np.allclose(mapped, ARCFACE_TEMPLATE, atol=1e-6)


@given(roll=st.floats(-80, 80))
def test_eye_line_angle_matches_in_plane_rotation(roll):
    assert math.isclose(eye_line_angle(eye_points(rotation(0, 0, roll))), roll, abs_tol=1e-6)


def test_aligning_template_points_is_the_identity_crop():
    image = np.random.default_rng(0).integers(0, 255, (112, 112, 3), dtype=np.uint8)
    assert np.array_equal(align_face(image, ARCFACE_TEMPLATE), image)


@given(angles, angles, angles, st.integers(0, 2**16))
@settings(max_examples=100, deadline=None)
def test_the_roll_alone_is_the_roll_of_the_whole_pose(yaw, pitch, roll, seed):
    mesh = frontal_mesh(seed) @ rotation(yaw, pitch, roll).T
    assert mesh_roll(mesh) == estimate_pose(mesh).roll
