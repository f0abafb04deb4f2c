"""Config validation, per-scene merging, dataclass building and a dry run of the workflow."""

import copy
import importlib.util
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from r2l.core.config import deep_merge, from_dict, load_schema, stage_section, validate_config
from r2l.core.errors import R2LError

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
        [sys.executable, "-m", "snakemake", "--nolock", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_dry_run_plans_the_default_config():
    result = snakemake("-n", "--forceall")
    assert result.returncode == 0, result.stderr
    out = result.stdout + result.stderr
    for rule in ("builtin_scene", "real_data", "train_teacher", "pseudo_data", "train_student", "finetune",
                 "evaluate", "comparison_figure", "video", "summary", "all"):
        assert re.search(rf"^{rule}\s+1$", out, re.M), f"{rule} not planned once:\n{out}"


def test_dry_run_rejects_a_bad_config_readably(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("teacher:\n  steps: 10\nscenes:\n  x:\n    format: nerf\n")
    result = snakemake("-n", "--configfile", str(bad))
    assert result.returncode != 0
    assert "scenes.x.format: 'nerf' is not one of" in result.stdout + result.stderr


def schema_keys(node: dict, defs: dict) -> dict:
    """Nested key tree of an object schema (following local $refs)."""
    if "$ref" in node:
        node = defs[node["$ref"].split("/")[-1]]
    props = node.get("properties", {})
    return {k: schema_keys(v, defs) if "properties" in v or "$ref" in v and "properties" in defs[v["$ref"].split("/")[-1]] else None
            for k, v in props.items()}


def dataclass_keys(cls) -> dict:
    import dataclasses
    import typing

    hints = typing.get_type_hints(cls)
    return {f.name: dataclass_keys(hints[f.name]) if dataclasses.is_dataclass(hints[f.name]) else None
            for f in dataclasses.fields(cls)}


def test_schema_stage_keys_match_the_dataclasses():
    from r2l.data.colmap import ColmapConfig
    from r2l.models.teacher import TeacherConfig
    from r2l.stages.student import DistillConfig

    schema = load_schema()
    defs = schema["$defs"]
    assert schema_keys(defs["teacher"], defs) == dataclass_keys(TeacherConfig)
    assert schema_keys(defs["student"], defs) == dataclass_keys(DistillConfig)
    assert schema_keys(defs["colmap"], defs) == dataclass_keys(ColmapConfig)


def test_default_colmap_section_is_the_dataclass_default():
    from r2l.data.colmap import ColmapConfig, colmap_config_from_dict

    assert colmap_config_from_dict(DEFAULT["colmap"]) == ColmapConfig()


def test_photos_scenes_need_a_path_and_take_layout_and_colmap_overrides():
    config = copy.deepcopy(DEFAULT)
    config["scenes"]["mine"] = {"format": "photos", "path": "photos/", "layout": "object",
                                "colmap": {"matcher": "sequential"}}
    validate_config(config)
    assert stage_section(config, "colmap", "mine")["matcher"] == "sequential"
    config["scenes"]["mine"] = {"format": "photos", "url": "https://example.org/photos.zip"}
    assert "exactly one source" in invalid(config)
    config["scenes"]["mine"] = {"format": "photos", "path": "p", "layout": "360", "colmap": {"matcher": "vocab"}}
    message = invalid(config)
    assert "scenes.mine.layout" in message and "scenes.mine.colmap.matcher" in message


def test_default_config_lists_every_stage_key():
    schema = load_schema()
    defs = schema["$defs"]
    for stage in ("teacher", "pseudo_data", "student", "finetune", "evaluate", "colmap"):
        assert _keys_of(DEFAULT[stage]) == _keys_of_schema(defs[stage], defs), stage


def _keys_of(d):
    return {k: _keys_of(v) if isinstance(v, dict) else None for k, v in d.items()}


def _keys_of_schema(node, defs):
    return schema_keys(node, defs)


def test_stage_values_are_type_checked():
    config = copy.deepcopy(DEFAULT)
    config["teacher"]["kind"] = "tensorf"
    config["student"]["network"]["depth"] = 87
    config["pseudo_data"]["focal_scale"] = [1.0]
    message = invalid(config)
    assert "teacher.kind" in message and "student.network.depth" in message and "pseudo_data.focal_scale" in message


def test_lint_is_clean():
    result = snakemake("--lint")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Congratulations, your workflow is in a good condition!" in result.stdout + result.stderr


def test_snakemake_files_are_snakefmt_formatted():
    files = [str(ROOT / "Snakefile"), *map(str, sorted((ROOT / "workflow" / "rules").glob("*.smk")))]
    result = subprocess.run([sys.executable, "-m", "snakefmt", "--check", *files], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def _dotted_keys(node: dict, prefix: str = "") -> list[str]:
    """Every key path of a nested mapping, e.g. ``teacher.grid.resolution``."""
    out = []
    for key, value in node.items():
        path = f"{prefix}{key}"
        out.append(path)
        if isinstance(value, dict):
            out.extend(_dotted_keys(value, path + "."))
    return out


def test_config_page_describes_every_key():
    text = (ROOT / "docs" / "configuration.md").read_text()
    missing = [k for k in _dotted_keys(DEFAULT) if f"`{k}`" not in text]
    assert missing == [], f"docs/configuration.md lacks {missing}"
    assert "`teacher.grid.resolution`" in text and "`student.network.depth`" in text  # the walk reaches depth 3


def test_installed_wheel_validates_a_config(tmp_path):
    """A wheel built from the repository carries the schema: it validates a config from any folder."""
    if importlib.util.find_spec("setuptools") is None:
        pytest.skip("setuptools is not installed in this environment, so no wheel can be built offline")
    wheel_dir = tmp_path / "wheel"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(wheel_dir), str(ROOT)], check=True, capture_output=True)
    (wheel,) = wheel_dir.glob("r2l-*.whl")
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True, capture_output=True)
    code = ("import sys, yaml; from r2l.core.config import validate_config; import r2l; "
            "assert r2l.__file__.startswith(sys.argv[2]), r2l.__file__; "
            "validate_config(yaml.safe_load(open(sys.argv[1]))); print('valid')")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**DEFAULT, "teacher": {"stpes": 3}}))
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}
    ok = subprocess.run([sys.executable, "-c", code, str(ROOT / "config" / "config.yaml"), str(site)],
                        cwd=tmp_path, env=env, capture_output=True, text=True)
    assert ok.returncode == 0 and ok.stdout.strip() == "valid", ok.stderr
    no = subprocess.run([sys.executable, "-c", code, str(bad), str(site)], cwd=tmp_path, env=env,
                        capture_output=True, text=True)
    assert no.returncode != 0 and "teacher: unknown key(s) 'stpes'" in no.stderr


@pytest.mark.parametrize("name", ["..", "../..", "a/b", "my scene", ".hidden", "x" * 101])
def test_unsafe_scene_names_are_refused_by_name(name):
    config = copy.deepcopy(DEFAULT)
    config["scenes"][name] = {"format": "builtin"}
    message = invalid(config)
    assert f"scene name {name!r} is not allowed" in message


def test_safe_scene_names_pass_and_run_scenes_must_name_scenes():
    config = copy.deepcopy(DEFAULT)
    config["scenes"].update({"lego_400": {"format": "builtin"}, "Fern-2.v1": {"format": "builtin"}})
    validate_config(config)
    config["run_scenes"] = ["lego_400", "flower"]
    assert "run_scenes: 'flower' not under `scenes:` (has builtin, lego_400, Fern-2.v1)" in invalid(config)


def test_numbers_yaml_reads_as_strings_become_numbers():
    """YAML 1.1 reads ``5e-4`` as a string; where the schema wants a number it becomes one (in place)."""
    config = copy.deepcopy(DEFAULT)
    config.update(yaml.safe_load("teacher: {lr: 5e-4, steps: 1e3}\nstudent: {lr: 2E-4}"))
    config["scenes"]["builtin"]["teacher"] = {"lr": "1e-3"}
    assert config["teacher"]["lr"] == "5e-4"  # what PyYAML gives
    validate_config(config)
    assert config["teacher"]["lr"] == 5e-4 and config["teacher"]["steps"] == 1000
    assert isinstance(config["teacher"]["steps"], int) and config["student"]["lr"] == 2e-4
    assert config["scenes"]["builtin"]["teacher"]["lr"] == 1e-3
    config["student"]["lr"] = "5e-4x"
    assert "student.lr: '5e-4x' is not of type 'number'" in invalid(config)


def test_a_run_says_which_scenes_it_runs():
    from r2l.core.config import run_scenes_line

    config = copy.deepcopy(DEFAULT)
    assert run_scenes_line(config).startswith("r2l: scenes to run: builtin (every scene under scenes:")
    assert "default config's built-in scene" in run_scenes_line(config)
    config["scenes"]["lego"] = {"format": "blender", "path": "x"}
    config["run_scenes"] = ["lego"]
    assert run_scenes_line(config) == "r2l: scenes to run: lego (run_scenes)"
