"""Shared test set-up: offline, and the bundled real photos."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

FACES_DIR = Path(__file__).resolve().parents[1] / "eval" / "demo" / "faces"


@pytest.fixture(scope="session")
def faces_dir() -> Path:
    return FACES_DIR
