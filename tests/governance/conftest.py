from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from governance import Actor, GovernanceContext, Purpose, new_record


@pytest.fixture
def gov(tmp_path) -> GovernanceContext:
    """A fresh workspace: real SQLite registry, real keys, real test PKI."""
    return GovernanceContext.init(tmp_path / "gov", controller="Test Avatars Ltd")


def workspace_on(tmp_path: Path, registry: str) -> GovernanceContext:
    """A fresh workspace whose registry (and with it the vault's data keys) is at ``registry``."""
    GovernanceContext.init(tmp_path / "gov", controller="Test Avatars Ltd")
    config = tmp_path / "gov" / "governance.toml"
    config.write_text(config.read_text().replace('registry = "consent.sqlite"', f'registry = "{registry}"'))
    return GovernanceContext.load(config)


@pytest.fixture
def operator() -> Actor:
    return Actor("olga", "operator")


@pytest.fixture
def admin() -> Actor:
    return Actor("ada", "admin")


@pytest.fixture
def consented(gov):
    """alice agreed to every purpose; returns her record."""
    return gov.registry.add(new_record("alice", list(Purpose), controller="Test Avatars Ltd", jurisdiction="EU",
                                       actor="olga"))


@pytest.fixture
def png(tmp_path) -> Path:
    """A 512x512 noise PNG standing in for a generated avatar."""
    path = tmp_path / "generated.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (512, 512, 3), dtype=np.uint8)).save(path)
    return path
