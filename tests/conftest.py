"""Shared test fixtures: the optional real data beside the checkout, a fixed thread count."""

from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

torch.set_num_threads(1)  # many small ops: one thread is faster and steadier on 2-core machines


@pytest.fixture
def lego_100() -> Path:
    """The real lego scene at 100x100 from ../shared/data (skipped where a clone has none)."""
    path = SHARED_DATA / "nerf_synthetic" / "lego_100"
    if not path.is_dir():
        pytest.skip(f"real lego data not found at {path} (only present beside the developers' checkout)")
    return path


@pytest.fixture
def flower() -> Path:
    """The real forward-facing LLFF capture flower from ../shared/data (skipped where a clone has none)."""
    path = SHARED_DATA / "nerf_llff_data" / "flower"
    if not (path / "poses_bounds.npy").is_file():
        pytest.skip(f"real LLFF capture not found at {path} (only present beside the developers' checkout)")
    return path
