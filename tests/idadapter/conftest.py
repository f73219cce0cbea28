from pathlib import Path

import pytest
from diffusers import StableDiffusionPipeline
from PIL import Image

from idadapter.identity_loss import FaceIdentity
from idadapter.testing import tiny_pipeline

DEMO_FACES = Path(__file__).resolve().parents[2] / "eval" / "demo" / "faces"


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    """A tiny SD 2.1-layout pipeline folder with random weights, saved once per session."""
    directory = tmp_path_factory.mktemp("tiny-sd21")
    tiny_pipeline(directory, layout="sd21")
    return directory


@pytest.fixture
def pipe(tiny_base) -> StableDiffusionPipeline:
    """A fresh copy of the tiny base (tests may attach layers to it)."""
    loaded = StableDiffusionPipeline.from_pretrained(tiny_base, local_files_only=True)
    loaded.set_progress_bar_config(disable=True)
    return loaded


@pytest.fixture(scope="session")
def face_identity() -> FaceIdentity:
    return FaceIdentity.from_register("sface")


@pytest.fixture(scope="session")
def demo_photo():
    def open_photo(name: str) -> Image.Image:
        return Image.open(DEMO_FACES / name).convert("RGB")
    return open_photo
