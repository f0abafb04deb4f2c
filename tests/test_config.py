"""Config validation, per-scene merging, dataclass building, a dry run of the workflow, and the one source of each
key's default and meaning: config/config.yaml, which docs/configuration.md is generated from."""

import copy
import importlib.util
import re
import subprocess
import sys
from dataclasses import dataclass, field

import pytest
import yaml

from r2l.core import configdoc
from r2l.core.config import as_type, coerce, deep_merge, from_dict, load_schema, stage_section, validate_config
from r2l.core.errors import R2LError

from helpers import ROOT, default_config

DEFAULT = default_config()
PAPER = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())


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


def test_one_coercer_converts_for_the_schema_and_the_dataclasses():
    assert as_type("5e-4", "number") == 5e-4 and as_type("1e3", "integer") == 1000 and as_type(2, "number") == 2.0
    assert as_type(1000.0, "integer") == 1000 and isinstance(as_type(1000.0, "integer"), int)
    for value, kind in [(2.5, "integer"), (True, "integer"), (1, "boolean"), ("x", "number"), (3, "string"),
                        ("5e-4x", "number"), (float("inf"), "integer")]:
        with pytest.raises(ValueError, match="expected"):
            as_type(value, kind)
    assert coerce("1e3", int, "x") == 1000 and coerce(None, int | None, "x") is None
    assert coerce([1, 2], tuple[int, ...], "x") == (1, 2)
    with pytest.raises(R2LError, match=r"teacher.steps: 2.5 is not valid \(expected an integer\)"):
        coerce(2.5, int, "teacher.steps")
    config = copy.deepcopy(DEFAULT)
    config["student"]["network"]["depth"] = "12"  # a string that is a number, where the schema wants an integer
    assert validate_config(config)["student"]["network"]["depth"] == 12
    assert as_type("true", "boolean") is True and as_type(" False", "boolean") is False
    config["deploy"]["export"] = "true"  # as `--config deploy='{export: true}'` gives it
    assert validate_config(config)["deploy"]["export"] is True
    config["deploy"]["export"] = "yes"
    with pytest.raises(R2LError, match="deploy.export"):
        validate_config(config)


# ----------------------------------------------------------------------- one source of each key's default and meaning


def test_config_page_is_generated_from_the_config_files():
    """docs/configuration.md is what config/config.yaml, config/paper.yaml and the schema make."""
    made, kept = configdoc.build_page().splitlines(), configdoc.PAGE.read_text().splitlines()
    if made == kept:
        return
    n = next((i for i, (a, b) in enumerate(zip(made, kept)) if a != b), min(len(made), len(kept)))
    line = made[n] if n < len(made) else kept[n]
    key = re.match(r"\| `([^`]+)`", line)
    pytest.fail(f"docs/configuration.md is not what the config files make: first difference at line {n + 1}"
                f"{f' (key {key[1]})' if key else ''}: {line!r}; regenerate it: {configdoc.COMMAND}")


def config_keys():
    return configdoc.read_keys(configdoc.CONFIG.read_text())


def test_every_config_key_has_a_meaning():
    missing = configdoc.uncommented(config_keys())
    assert missing == [], f"keys of config/config.yaml without a comment (their meaning): {missing}"


def test_the_schema_and_config_yaml_name_the_same_keys():
    assert configdoc.schema_mismatches(config_keys(), load_schema()) == []
    assert configdoc.scene_entry_problems(config_keys(), load_schema()) == []


def test_the_config_parser_reads_comments_as_meanings():
    text = ("# the file's header\n\n# intro of a\na:\n  b: 1  # the b\n        # continued\n"
            "  # intro of c\n  c: [1, 2]  # the c\nd: 'x # y'  # the d\n")
    keys = {key.name: key for key in configdoc.read_keys(text)}
    assert list(keys) == ["a", "a.b", "a.c", "d"]
    assert keys["a"].intro == ["intro of a"] and keys["a"].meaning == ""
    assert keys["a.b"].meaning == "the b continued" and keys["a.c"].meaning == "intro of c the c"
    assert keys["a.c"].value == "[1, 2]" and keys["d"].value == "'x # y'" and keys["d"].meaning == "the d"
    assert configdoc.uncommented(configdoc.read_keys("a: 1\nb: 2  # the b\n")) == ["a"]


@pytest.mark.parametrize("text, message", [
    ("a: 1  # x\n\n# stray\n\nb: 2  # y\n", "line 3: a comment block belongs to no key"),
    ("a:\n  # misplaced\n    b: 1  # x\n", "line 2: a comment above a key sits at the key's indentation"),
    ("a: {b: 1}  # x\n", "a.b: not one key a line"),
    ("a:\n  - 1\n", "line 2: expected `key: value  # meaning`"),
    ("a: 1  # x\n# left over\n", "line 2: the comment lines at the end belong to no key"),
])
def test_the_config_parser_refuses_what_it_cannot_document(text, message):
    with pytest.raises(R2LError, match=re.escape(message)):
        configdoc.read_keys(text)


def test_keys_missing_from_the_schema_or_the_config_are_named():
    schema = {"$defs": {"n": {"type": "integer", "minimum": 1}},
              "properties": {"a": {"properties": {"b": {"$ref": "#/$defs/n"}}}, "c": {"type": "string"}}}
    keys = configdoc.read_keys("a:  # x\n  b: 1  # y\n  e: 2  # z\n")
    assert configdoc.schema_mismatches(keys, schema) == ["a.e: in config/config.yaml but not in the schema",
                                                         "c: in the schema but not in config/config.yaml"]
    assert configdoc.allowed(schema["properties"]["a"]["properties"]["b"], schema["$defs"]) == "integer >= 1"


def test_config_modules_do_not_import_torch():
    code = "import sys, r2l.core.config, r2l.core.configdoc; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# Where the paper preset and a dataclass default disagree on purpose (or until the dataclass changes): the test
# below fails when one of these agrees again, so that the entry goes.
PAPER_DIFFERENCES: dict[str, str] = {}  # none today


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
    return out


def test_the_paper_preset_is_the_dataclass_defaults():
    """The stage dataclasses default to the paper's values, and config/paper.yaml (over config/config.yaml) switches
    every stage to them: each key the preset runs with equals the dataclass default (networks not run skipped)."""
    import dataclasses

    from r2l.data.colmap import ColmapConfig
    from r2l.models.students import family
    from r2l.models.teacher import TeacherConfig
    from r2l.stages.student import DistillConfig

    preset = deep_merge(DEFAULT, PAPER)
    kinds = preset["student"]["compare"] + [preset["student"]["family"]]
    unused = {f"teacher.{k}." for k in ("nerf", "grid") if k != preset["teacher"]["kind"]}
    unused |= {f"student.{k}." for k in ("network", "grid") if k not in {family(n).config_key for n in kinds}}
    differ, agree = [], []
    for section, cls in (("teacher", TeacherConfig), ("student", DistillConfig), ("colmap", ColmapConfig)):
        defaults = _flat(dataclasses.asdict(cls()), f"{section}.")
        for name, value in _flat(preset[section], f"{section}.").items():
            if any(name.startswith(u) for u in unused):
                continue
            if name in PAPER_DIFFERENCES:
                agree += [name] if value == defaults[name] else []
            elif value != defaults[name]:
                differ.append(f"{name}: the paper preset runs {value!r}, the dataclass default is {defaults[name]!r}")
    assert differ == [], "config/paper.yaml or a dataclass default is wrong:\n" + "\n".join(differ)
    assert agree == [], f"these now agree: drop them from PAPER_DIFFERENCES: {agree}"
