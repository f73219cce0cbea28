"""Property tests for the alignment and pose maths."""
import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from eval.faces import ARCFACE_TEMPLATE, align_face, similarity_transform
from eval.faces.detector import MIRROR_ORDER, eye_line_angle
from eval.faces.pose import FACE_MODEL_MM, estimate_pose, euler_from_rotation

angles = st.floats(-60, 60)


def rotation(yaw, pitch, roll):
    y, p, r = np.radians([yaw, -pitch, roll])
    rx = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
    ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    return rz @ ry @ rx


def project(rot, size=(800, 600), distance=700.0):
    width, height = size
    focal = max(size)
    points = FACE_MODEL_MM @ rot.T + np.array([0, 0, distance])
    return np.stack(
        [focal * points[:, 0] / points[:, 2] + (width - 1) / 2, focal * points[:, 1] / points[:, 2] + (height - 1) / 2], axis=1
    )


@given(yaw=angles, pitch=angles, roll=st.floats(-170, 170))
def test_euler_decomposition_round_trips(yaw, pitch, roll):
    pose = euler_from_rotation(rotation(yaw, pitch, roll))
    assert np.allclose([pose.yaw, pose.pitch, pose.roll], [yaw, pitch, roll], atol=1e-6)


@settings(max_examples=60)
@given(yaw=st.floats(-45, 45), pitch=st.floats(-30, 30), roll=st.floats(-60, 60))
def test_pose_is_recovered_from_exact_projections(yaw, pitch, roll):
    pose = estimate_pose(project(rotation(yaw, pitch, roll)), (800, 600))
    assert np.allclose([pose.yaw, pose.pitch, pose.roll], [yaw, pitch, roll], atol=0.05)


@settings(max_examples=60)
@given(yaw=st.floats(-45, 45), pitch=st.floats(-30, 30), roll=st.floats(-60, 60))
def test_mirrored_landmarks_flip_yaw_and_roll(yaw, pitch, roll):
    width, height = 800, 600
    landmarks = project(rotation(yaw, pitch, roll))
    mirrored = landmarks[MIRROR_ORDER].copy()
    mirrored[:, 0] = width - 1 - mirrored[:, 0]
    original, flipped = estimate_pose(landmarks, (width, height)), estimate_pose(mirrored, (width, height))
    assert np.allclose([flipped.yaw, flipped.pitch, flipped.roll], [-original.yaw, original.pitch, -original.roll], atol=0.05)


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
    assert math.isclose(eye_line_angle(project(rotation(0, 0, roll))), roll, abs_tol=1e-6)


def test_aligning_template_points_is_the_identity_crop():
    image = np.random.default_rng(0).integers(0, 255, (112, 112, 3), dtype=np.uint8)
    assert np.array_equal(align_face(image, ARCFACE_TEMPLATE), image)
