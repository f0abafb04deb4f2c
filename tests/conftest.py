"""Shared test fixtures: the optional real data beside the checkout, a tiny built-in scene and view stores of it,
quiet logging, a fixed thread count. Plain helper functions are in helpers.py."""

from pathlib import Path

import pytest
import torch
from helpers import ROOT, analytic_stores, builtin_orbit

SHARED_DATA = ROOT.parent / "shared" / "data"

torch.set_num_threads(1)  # many small ops: one thread is faster and steadier on 2-core machines


def _shared_data(relative: str, what: str, needs: str = "") -> Path:
    """``SHARED_DATA / relative`` (a folder, holding ``needs`` when given), or skip the test saying ``what`` is
    missing."""
    path = SHARED_DATA / relative
    if not ((path / needs).is_file() if needs else path.is_dir()):
        pytest.skip(f"{what} not found at {path} (only present beside the developers' checkout)")
    return path


@pytest.fixture(scope="session")
def lego_100() -> Path:
    """The real lego scene at 100x100 from ../shared/data (skipped where a clone has none)."""
    return _shared_data("nerf_synthetic/lego_100", "real lego data")


@pytest.fixture(scope="session")
def lego_400() -> Path:
    """The real lego scene at 400x400 from ../shared/data (skipped where a clone has none)."""
    return _shared_data("nerf_synthetic/lego_400", "real lego data")


@pytest.fixture(scope="session")
def flower() -> Path:
    """The real forward-facing LLFF capture flower from ../shared/data (skipped where a clone has none)."""
    return _shared_data("nerf_llff_data/flower", "real LLFF capture", needs="poses_bounds.npy")


@pytest.fixture
def quiet_logging(monkeypatch):
    """In-process ``r2l`` runs keep pytest's logging (the command configures the root logger otherwise); a module
    asks for it with ``pytestmark = pytest.mark.usefixtures("quiet_logging")``."""
    monkeypatch.setattr("r2l.core.log.setup_logging", lambda: None)


@pytest.fixture(scope="module")
def orbit_scene(tmp_path_factory):
    """The built-in orbit scene at 16x16 (8 training, 2 validation, 1 test views): tiny teachers train on it."""
    return builtin_orbit(tmp_path_factory.mktemp("scene") / "builtin")


@pytest.fixture(scope="module")
def builtin_stores(tmp_path_factory) -> dict[str, Path]:
    """Pseudo-data (80 views of 24x24) and held-out validation views (3, other cameras) of the built-in scene's
    ground truth, for real distillation runs: {"pseudo": path, "val": path}."""
    return analytic_stores(tmp_path_factory.mktemp("stores"), side=24, n_train=6, pseudo=(80, 40), val=(3, 10))
