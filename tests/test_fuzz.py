"""Corrupt files never give a traceback: every reader either reads the file or raises one R2LError naming it.

Each file is damaged in seeded ways (truncations, bit flips, random bytes of the same length, an empty file)
and read again through the function the pipeline reads it with.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from r2l.core.errors import R2LError
from r2l.data.builtin import write_blender, write_llff
from r2l.data.registry import load_scene
from r2l.data.views import ViewStore
from r2l.stages.pseudo_data import convert_real_data

from helpers import tiny_teacher

SEED = 20261130


def damaged(data: bytes, rng: np.random.Generator, n_each: int = 4) -> list[tuple[str, bytes]]:
    """Seeded damaged copies of ``data``: truncations, bit flips, random bytes, empty."""
    out = [("empty", b"")]
    for frac in rng.uniform(0.0, 1.0, n_each):
        out.append((f"truncated at {frac:.2f}", data[: int(len(data) * frac)]))
    for i in range(n_each):
        flipped = bytearray(data)
        for pos in rng.integers(0, len(data), size=1 + i * 3):
            flipped[pos] ^= 1 << int(rng.integers(0, 8))
        out.append((f"{1 + i * 3} bit flips", bytes(flipped)))
    out.append(("random bytes", rng.integers(0, 256, len(data), dtype=np.uint8).tobytes()))
    return out


def read_or_clean_error(read, path: Path, how: str) -> None:
    """``read()`` succeeds, or raises an R2LError whose message is one line naming ``path``."""
    try:
        read()
    except R2LError as err:
        first = str(err).splitlines()[0]
        assert path.name in first or path.parent.name in first, f"{how}: {first!r} names neither {path}"
    except Exception as err:  # noqa: BLE001  (the point of the test: anything else is a traceback)
        raise AssertionError(f"{path.name} {how}: {type(err).__name__}: {err}") from err


def fuzz(path: Path, read, rng: np.random.Generator) -> int:
    """Damage ``path`` every way, read it each time, restore it; returns how many variants were tried."""
    original = path.read_bytes()
    variants = damaged(original, rng)
    try:
        for how, data in variants:
            path.write_bytes(data)
            read_or_clean_error(read, path, how)
    finally:
        path.write_bytes(original)
    read()  # the restored file reads again
    return len(variants)


@pytest.fixture(scope="module")
def blender_dir(tmp_path_factory) -> Path:
    return write_blender(tmp_path_factory.mktemp("fuzz") / "blender", seed=0, resolution=16, n_train=3, n_val=1,
                         n_test=1)


@pytest.fixture(scope="module")
def llff_dir(tmp_path_factory) -> Path:
    return write_llff(tmp_path_factory.mktemp("fuzz") / "llff", seed=0, width=16, height=12, n_views=6)


def test_transforms_files(blender_dir, tmp_path):
    folder = Path(shutil.copytree(blender_dir, tmp_path / "scene"))
    rng = np.random.default_rng(SEED)
    for name in ("transforms_train.json", "transforms_test.json"):
        assert fuzz(folder / name, lambda: load_scene("blender", folder, resolution=16), rng) == 10


def test_poses_bounds(llff_dir, tmp_path):
    folder = Path(shutil.copytree(llff_dir, tmp_path / "scene"))
    rng = np.random.default_rng(SEED + 1)
    assert fuzz(folder / "poses_bounds.npy", lambda: load_scene("llff", folder, factor=8, llff_hold=3), rng) == 10


def test_view_store_shards_and_meta(blender_dir, tmp_path):
    scene = load_scene("blender", blender_dir, resolution=16)
    store = tmp_path / "store"
    convert_real_data(scene, store, split="train", views_per_shard=2)
    rng = np.random.default_rng(SEED + 2)
    files = sorted(store.glob("shard_*.npz")) + [store / "meta.json"]
    assert len(files) == 3
    for path in files:
        fuzz(path, lambda: ViewStore(store), rng)


def test_a_text_file_saved_as_poses_bounds_is_named_as_such(llff_dir, tmp_path):
    folder = Path(shutil.copytree(llff_dir, tmp_path / "scene"))
    np.savetxt(folder / "poses_bounds.npy", np.zeros((6, 17)))
    with pytest.raises(R2LError, match=r"poses_bounds.npy: not a .npy file .*saved as text"):
        load_scene("llff", folder, factor=8, llff_hold=3)


# ----------------------------------------------------------------------------- model files and checkpoints


@pytest.fixture(scope="module")
def trained(blender_dir, tmp_path_factory):
    """A 3-step grid teacher of the pipeline (its model file and resume checkpoints)."""
    from r2l.stages.teacher import train_teacher

    d = tmp_path_factory.mktemp("teacher")
    cfg = tiny_teacher("grid", {"steps": 3, "val_views": 1, "check_learned": False, "chunk": 256, "ckpt_every": 1})
    train_teacher(load_scene("blender", blender_dir, resolution=16), cfg, d / "model.pt", d / "resume")
    return d


def test_model_files(trained, tmp_path):
    from r2l.models.load import load_model

    model = Path(shutil.copy(trained / "model.pt", tmp_path / "model.pt"))
    assert fuzz(model, lambda: load_model(model, "cpu"), np.random.default_rng(SEED + 3)) == 10


def test_checkpoints_fall_back_to_an_older_one(trained, tmp_path, caplog):
    """A damaged newest checkpoint is skipped with a warning for the one before it, whatever the damage."""
    import logging

    from r2l.core.checkpoint import load_latest_checkpoint

    resume = Path(shutil.copytree(trained / "resume", tmp_path / "resume"))
    newest, older = sorted(resume.glob("ckpt_*.pt"))[-1], sorted(resume.glob("ckpt_*.pt"))[-2]
    original = newest.read_bytes()
    for how, data in damaged(original, np.random.default_rng(SEED + 4)):
        newest.write_bytes(data)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="r2l"):
            ckpt = load_latest_checkpoint(resume, check=lambda c: c["weights"] and c["optimizer"] and c["rng"])
        assert ckpt is not None and ckpt["step"] in (2, 3), how  # the older one, or a flip that did no harm
        if ckpt["step"] == 2:
            assert newest.name in caplog.text and "falling back" in caplog.text, how
    newest.write_bytes(original)
    assert load_latest_checkpoint(resume)["step"] == 3 and older.is_file()
