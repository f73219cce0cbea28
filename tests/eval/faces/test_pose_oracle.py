"""Absolute head pose against a second estimator: perspective-n-point on dlib's 68-point landmarks and
a generic 6-point 3-D face. A test oracle only: the 68-point model's training data (iBUG 300-W)
excludes commercial use, so the suite never uses it to score. Figures in docs/eval.md ("Head pose")."""
import cv2
import numpy as np
import pytest

from eval.faces import FaceAnalyzer, load_image
from eval.faces.pose import euler_from_rotation
from eval.models import verified_model_path

# The common generic head model (nose tip, chin, outer eye corners, mouth corners), in camera axes
# (x right, y down, z away from the camera), and the matching dlib 68-point indices.
GENERIC_FACE = np.array([[0, 0, 0], [0, 330, 65], [-225, -170, 135], [225, -170, 135], [-150, 150, 125], [150, 150, 125]], float)
DLIB_68 = [30, 8, 36, 45, 48, 54]


def pnp_pose(rgb, box, predictor, dlib):
    shape = predictor(rgb, dlib.rectangle(*[int(round(v)) for v in box]))
    points = np.array([[shape.part(i).x, shape.part(i).y] for i in DLIB_68], float)
    height, width = rgb.shape[:2]
    focal = max(width, height)
    camera = np.array([[focal, 0, (width - 1) / 2], [0, focal, (height - 1) / 2], [0, 0, 1]])
    ok, rvec, _ = cv2.solvePnP(GENERIC_FACE, points.reshape(-1, 1, 2), camera, None, flags=cv2.SOLVEPNP_ITERATIVE)
    assert ok
    return euler_from_rotation(cv2.Rodrigues(rvec)[0])


@pytest.fixture(scope="module")
def both(faces_dir):
    import dlib

    predictor = dlib.shape_predictor(str(verified_model_path("dlib_landmarks68")))
    analyzer = FaceAnalyzer(recognizers=(), with_expression=False)
    rows = []
    for path in sorted(faces_dir.glob("*.jpg")):
        rgb = load_image(path)
        face = analyzer.analyze_one(rgb).main_face
        box = analyzer.detector.detect_frame(rgb)[0][0]
        oracle = pnp_pose(rgb, box, predictor, dlib)
        rows.append([face.pose.yaw, face.pose.pitch, face.pose.roll, oracle.yaw, oracle.pitch, oracle.roll])
    return np.array(rows)


def test_mesh_pose_agrees_with_pnp_on_dlib_68_landmarks(both):
    mesh, oracle = both[:, :3], both[:, 3:]
    assert np.corrcoef(mesh[:, 0], oracle[:, 0])[0, 1] >= 0.85  # yaw: same ordering (measured 0.93)
    assert np.corrcoef(mesh[:, 2], oracle[:, 2])[0, 1] >= 0.85  # roll (measured 0.92)
    assert np.abs(mesh[:, 2] - oracle[:, 2]).mean() <= 3.0  # roll has no convention to differ on (1.7)
    turned = np.abs(oracle[:, 0]) > 10
    assert (np.sign(mesh[turned, 0]) == np.sign(oracle[turned, 0])).all()
