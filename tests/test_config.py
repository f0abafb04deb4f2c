"""Config validation, per-scene merging, dataclass building and a dry run of the workflow."""

import copy
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from r2l.config import deep_merge, from_dict, stage_section, validate_config
from r2l.errors import R2LError

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


def test_default_config_is_valid():
    validate_config(copy.deepcopy(DEFAULT))


def invalid(config) -> str:
    with pytest.raises(R2LError) as info:
        validate_config(config, source="my.yaml")
    return str(info.value)


def test_unknown_top_level_key_is_named():
    config = copy.deepcopy(DEFAULT)
    config["teachr"] = {}
    message = invalid(config)
    assert "my.yaml is not valid" in message and "'teachr'" in message and "teacher" in message


def test_unknown_scene_key_and_bad_format():
    config = copy.deepcopy(DEFAULT)
    config["scenes"]["lego"] = {"format": "blendr", "path": "data/lego", "resolutoin": 400}
    message = invalid(config)
    assert "scenes.lego" in message
    assert "'resolutoin'" in message


def test_scene_needs_exactly_one_source():
    config = copy.deepcopy(DEFAULT)
    config["scenes"]["lego"] = {"format": "blender", "path": "a", "url": "https://example.org/x.zip"}
    assert "exactly one source" in invalid(config)
    config["scenes"]["lego"] = {"format": "blender"}
    assert "exactly one source" in invalid(config)


def test_bad_checksum_and_url():
    config = copy.deepcopy(DEFAULT)
    config["scenes"]["lego"] = {"format": "blender", "url": "ftp://host/x.zip", "sha256": "abc"}
    message = invalid(config)
    assert "scenes.lego.url" in message and "scenes.lego.sha256" in message


def test_stage_section_merges_scene_overrides():
    config = {
        "scenes": {"a": {"format": "builtin", "teacher": {"steps": 5, "grid": {"resolution": 32}}}, "b": {"format": "builtin"}},
        "teacher": {"steps": 100, "lr": 0.01, "grid": {"resolution": 128, "n_features": 8}},
    }
    assert stage_section(config, "teacher", "a") == {"steps": 5, "lr": 0.01, "grid": {"resolution": 32, "n_features": 8}}
    assert stage_section(config, "teacher", "b") == config["teacher"]
    with pytest.raises(R2LError, match="'c' is not in the config"):
        stage_section(config, "teacher", "c")
    assert deep_merge({"x": {"y": 1}}, {"x": {"z": 2}}) == {"x": {"y": 1, "z": 2}}


@dataclass
class Inner:
    size: int = 1


@dataclass
class Outer:
    steps: int = 10
    pair: tuple[float, float] = (1.0, 2.0)
    inner: Inner = field(default_factory=Inner)


def test_from_dict_builds_nested_and_rejects_unknown():
    cfg = from_dict(Outer, {"steps": 3, "pair": [0.5, 1.5], "inner": {"size": 7}})
    assert cfg == Outer(steps=3, pair=(0.5, 1.5), inner=Inner(size=7))
    with pytest.raises(R2LError, match=r"teacher.inner: unknown key\(s\) sise"):
        from_dict(Outer, {"inner": {"sise": 7}}, "teacher")


def snakemake(*args, cwd=ROOT):
    return subprocess.run(
        [sys.executable, "-m", "snakemake", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_dry_run_plans_the_default_config():
    result = snakemake("-n", "--quiet", "rules")
    assert result.returncode == 0, result.stderr
    for rule in ("builtin_scene", "all"):
        assert rule in result.stdout + result.stderr


def test_dry_run_rejects_a_bad_config_readably(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("teacher:\n  steps: 10\nscenes:\n  x:\n    format: nerf\n")
    result = snakemake("-n", "--configfile", str(bad))
    assert result.returncode != 0
    assert "scenes.x.format: 'nerf' is not one of" in result.stdout + result.stderr
