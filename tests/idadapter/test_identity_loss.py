"""The differentiable identity path: torch SFace, torch alignment, and the identity loss, on real photos."""
import numpy as np
import onnx
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from eval.faces import FaceAnalyzer, align_face, load_image
from eval.faces.recognizers import cosine
from idadapter.identity_loss import align_faces, identity_loss, image_tensor
from idadapter.torch_recognizer import _dequantize


@pytest.fixture(scope="module")
def analyzed(faces_dir):
    analyzer = FaceAnalyzer(recognizers=("sface",), with_pose=False, with_expression=False)
    names = ["obama_flag.jpg", "obama_oval.jpg", "biden.jpg", "ardern_2018.jpg"]
    return dict(zip(names, analyzer.analyze([faces_dir / n for n in names])))


def test_torch_sface_matches_onnxruntime_on_real_aligned_faces(face_identity, analyzed):
    for name, analysis in analyzed.items():
        face = analysis.main_face
        torch_embedding = face_identity.recognizer(image_tensor(face.aligned))[0].detach().numpy()
        assert cosine(torch_embedding, face.embeddings["sface"]) > 0.99, name


def test_torch_alignment_matches_the_face_cores_warp(face_identity, faces_dir):
    rgb = load_image(faces_dir / "ardern_2022.jpg")
    (landmarks,) = face_identity.landmarks(image_tensor(rgb))
    warped = align_faces(image_tensor(rgb), [landmarks])[0].permute(1, 2, 0).numpy() * 255
    reference = align_face(rgb, landmarks).astype(np.float32)
    assert np.abs(warped - reference).mean() < 1.0  # grey levels, of 255


@pytest.mark.slow
def test_identity_loss_is_low_for_the_same_person_and_its_gradient_reaches_the_image(face_identity, faces_dir):
    obama_reference = face_identity.mean_identity(image_tensor(load_image(faces_dir / "obama_oval.jpg")))
    same = image_tensor(load_image(faces_dir / "obama_flag.jpg")).requires_grad_(True)
    other = image_tensor(load_image(faces_dir / "sunak.jpg"))
    same_loss, used = identity_loss(face_identity, same, obama_reference[None])
    other_loss, _ = identity_loss(face_identity, other, obama_reference[None])
    assert used.tolist() == [True]
    assert same_loss.item() < 1 - 0.363 < other_loss.item()  # SFace's same-person cosine threshold
    same_loss.backward()
    assert same.grad.abs().sum() > 0


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 6), st.integers(1, 5), st.integers(1, 40), st.integers(0, 3))
def test_block_dequantization_matches_onnx_reference(blocks, rows, block_size, seed):
    rng = np.random.default_rng(seed)
    length = blocks * block_size - rng.integers(0, block_size)  # last block may be short
    quantized = rng.integers(-128, 127, size=(length, rows), dtype=np.int8)
    scales = rng.uniform(0.01, 1, size=(blocks, rows)).astype(np.float32)
    zero_points = rng.integers(-5, 5, size=(blocks, rows), dtype=np.int8)
    node = onnx.helper.make_node("DequantizeLinear", ["x", "s", "z"], ["y"], axis=0, block_size=block_size)
    from onnx.reference import ReferenceEvaluator

    graph = onnx.helper.make_graph([node], "g", [
        onnx.helper.make_tensor_value_info("x", onnx.TensorProto.INT8, quantized.shape),
        onnx.helper.make_tensor_value_info("s", onnx.TensorProto.FLOAT, scales.shape),
        onnx.helper.make_tensor_value_info("z", onnx.TensorProto.INT8, zero_points.shape),
    ], [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 21)])
    expected = ReferenceEvaluator(model).run(None, {"x": quantized, "s": scales, "z": zero_points})[0]
    np.testing.assert_allclose(_dequantize(quantized, scales, zero_points, 0, block_size), expected, rtol=1e-6)


@pytest.mark.parametrize("name", ["obama_podium.jpg", "sunak.jpg"])
def test_training_finds_the_landmarks_evaluation_finds(face_identity, faces_dir, name):
    """Same detector, same scale, same pixels: the trained identity is the judged one (it was detected
    on a 640 px copy, landmarks up to 9.7 px away)."""
    from eval.faces.detector import YuNetDetector

    rgb = load_image(faces_dir / name)
    (training,) = face_identity.landmarks(image_tensor(rgb))
    evaluation = YuNetDetector().detect(rgb)[0][2]
    np.testing.assert_allclose(training, evaluation, atol=1e-6)


def test_the_loss_is_averaged_over_the_batch_not_over_the_faces_found(face_identity, faces_dir):
    face = image_tensor(load_image(faces_dir / "macron_2014.jpg"))
    target = face_identity.mean_identity(image_tensor(load_image(faces_dir / "macron_2025.jpg")))
    alone, _ = identity_loss(face_identity, face, target[None])
    with_blanks, used = identity_loss(face_identity, torch.cat([face, torch.full_like(face, 0.5).repeat(3, 1, 1, 1)]),
                                      target[None].repeat(4, 1))
    assert used.tolist() == [True, False, False, False]
    assert alone.item() > 0.1
    torch.testing.assert_close(with_blanks, alone / 4)
    part, _ = identity_loss(face_identity, face, target[None], batch_size=4)  # the rest of the batch out of range
    torch.testing.assert_close(part, alone / 4)


def test_no_face_gives_a_zero_that_does_not_depend_on_the_pixels(face_identity):
    overflowed = torch.full((2, 3, 96, 96), 0.5, requires_grad=True)
    with torch.no_grad():
        overflowed[1, :, 10, 10] = float("nan")  # an fp16 VAE overflow
    loss, used = identity_loss(face_identity, overflowed, torch.randn(2, 128))
    assert not used.any() and loss.item() == 0.0
    assert not loss.requires_grad  # no path back to the pixels: L = L_SD + λ·0 is L_SD


@pytest.mark.parametrize("name", ["obama_podium.jpg", "sunak.jpg"])
def test_the_reference_crop_is_a_square_around_the_face(face_identity, faces_dir, name):
    from PIL import Image

    from idadapter.references import face_crop

    rgb = load_image(faces_dir / name)
    (landmarks,) = face_identity.landmarks(image_tensor(rgb))
    crop = face_crop(Image.fromarray(rgb), landmarks, 3.5)
    assert crop.width == crop.height < min(rgb.shape[:2])
    (inside,) = face_identity.landmarks(image_tensor(np.asarray(crop)))
    assert inside is not None  # the face is in the crop, and fills a good part of it
    assert np.linalg.norm(inside[0] - inside[1]) > 0.15 * crop.width
    assert face_crop(Image.fromarray(rgb), landmarks, None).size == (rgb.shape[1], rgb.shape[0])
