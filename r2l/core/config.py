"""The workflow config: validation against the JSON schema, per-scene merging, dataclass building.

A config (``config/config.yaml``) has a ``scenes:`` mapping and one section per stage (``colmap`` for
photos scenes, ``teacher``, ``pseudo_data``, ``student``, ``finetune``, ``evaluate``). A scene entry may
override any stage setting under a key of the stage's name; :func:`stage_section` merges the two, and
:func:`scene_settings`, :func:`scene_identity`, :func:`scene_source_dir`, :func:`compared_families` and
:func:`family_section` read a scene's entry. Needs only PyYAML and jsonschema (no torch, no numpy): the
Snakefile imports it.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
import typing
from importlib import resources
from pathlib import Path

import yaml

from r2l.core.errors import R2LError

SCHEMA = resources.files("r2l.schemas") / "config.schema.yaml"  # package data: the workflow validates with it too


def _where(error) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "(top level)"


def _message(error) -> str:
    """One readable line for a jsonschema error."""
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        allowed = ", ".join(sorted(error.schema.get("properties", {})))
        return f"unknown key(s) {', '.join(map(repr, extra))}; allowed here: {allowed}"
    if error.validator == "pattern" and error.schema.get("pattern", "").startswith("^[A-Za-z0-9_-]"):
        return (f"scene name {error.instance!r} is not allowed: use letters, digits, '_', '-' and '.' (not first), "
                "at most 100 characters (the name becomes a folder name)")
    if error.validator == "oneOf" and isinstance(error.instance, dict):
        return ("a scene needs exactly one source: `path:` (a local folder; for `format: photos` a folder of photos), "
                "`url:` (an archive, blender or llff) or `format: builtin`")
    return error.message


def load_schema() -> dict:
    """The config's JSON schema, read from the installed package (``r2l/schemas/config.schema.yaml``)."""
    # libyaml's loader where PyYAML has it: 10x faster than the pure-Python one, which took 0.3-0.6 s of every
    # Snakefile read (the same result: one resolver)
    return yaml.load(SCHEMA.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")
_KINDS = {int: "integer", float: "number", bool: "boolean", str: "string"}  # Python hint -> JSON-schema type
_ARTICLES = {"integer": "an integer", "number": "a number", "boolean": "a boolean", "string": "a string"}


def as_type(value, kind: str):
    """``value`` as the JSON-schema type ``kind`` (integer, number, boolean or string); raises ValueError.

    The one coercer of config values: schema validation and dataclass building both use it. A string that is a
    number (YAML 1.1 reads ``5e-4`` as one) becomes a number, ``1e3`` or ``1000.0`` an integer; the strings
    ``true`` and ``false`` (Snakemake's ``--config`` gives them) booleans; a bool is never a number, nor a number
    a bool or a string.
    """
    wrong = ValueError(f"expected {_ARTICLES[kind]}")
    if kind == "boolean" and isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    if kind in ("boolean", "string"):
        if not isinstance(value, bool if kind == "boolean" else str):
            raise wrong
        return value
    if isinstance(value, str) and _NUMBER.match(value.strip()):
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise wrong
    if kind == "number":
        return float(value)
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        raise wrong
    return int(value)


def _coerce_for_schema(config: dict, validator) -> None:
    """Turn values of the wrong type that :func:`as_type` can convert (numbers YAML read as strings, ``1e3`` for
    an integer, ``true``/``false`` from Snakemake's ``--config``) into the type the schema asks for, in place;
    the rest are left for validation to report."""
    for error in list(validator.iter_errors(config)):
        if error.validator != "type" or not error.absolute_path:
            continue
        wanted = error.schema["type"]
        for kind in [wanted] if isinstance(wanted, str) else wanted:
            if kind in ("integer", "number", "boolean") and isinstance(error.instance, str):
                try:
                    value = as_type(error.instance, kind)
                except ValueError:
                    continue
                parent = config
                for key in list(error.absolute_path)[:-1]:
                    parent = parent[key]
                parent[error.absolute_path[-1]] = value
                break


def validate_config(config: dict, source: str = "config") -> dict:
    """Validate ``config`` against the schema, filling defaults; raise R2LError listing every problem."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(load_schema())
    _coerce_for_schema(config, validator)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    lines = [f"  {_where(e)}: {_message(e)}" for e in errors]
    scenes = config.get("scenes") if isinstance(config.get("scenes"), dict) else {}
    unknown = [s for s in config.get("run_scenes") or [] if isinstance(s, str) and s not in scenes]
    if unknown:
        lines.append(f"  run_scenes: {', '.join(map(repr, unknown))} not under `scenes:` (has {', '.join(scenes)})")
    if lines:
        raise R2LError(f"{source} is not valid:\n" + "\n".join(lines))
    return config


def run_scenes_line(config: dict) -> str:
    """The line a run starts with: which scenes it will run and why (a validated config)."""
    names = config.get("run_scenes") or list(config["scenes"])
    why = "run_scenes" if config.get("run_scenes") else "every scene under scenes:, as run_scenes is empty"
    line = f"r2l: scenes to run: {', '.join(names)} ({why})"
    if names == ["builtin"] and config["scenes"]["builtin"].get("format") == "builtin":
        line += "; the default config's built-in scene (add yours under scenes: and name it in run_scenes:)"
    return line


def deep_merge(base: dict, override: dict) -> dict:
    """A copy of ``base`` with ``override`` merged in, recursively for nested dicts."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def stage_section(config: dict, stage: str, scene: str) -> dict:
    """The settings of ``stage`` for ``scene``: the global section with the scene's overrides on top."""
    if scene not in config.get("scenes", {}):
        raise R2LError(f"scene {scene!r} is not in the config's `scenes:` (has {sorted(config.get('scenes', {}))})")
    return deep_merge(config.get(stage, {}), config["scenes"][scene].get(stage, {}))


STAGE_SECTIONS = ("colmap", "teacher", "pseudo_data", "student", "finetune", "evaluate")  # a scene may override them


def scene_settings(config: dict, scene: str) -> dict:
    """A scene's entry with ``scene_defaults`` filled in for the keys it does not set (``builtin`` key by key)."""
    return deep_merge(config["scene_defaults"], config["scenes"][scene])


def scene_identity(config: dict, scene: str) -> dict:
    """:func:`scene_settings` without the stage sections a scene may override (``STAGE_SECTIONS``): what a stage
    depends on of its scene, besides its own section (a scene's ``evaluate:`` override reruns no teacher)."""
    return {k: v for k, v in scene_settings(config, scene).items() if k not in STAGE_SECTIONS}


def scene_source_dir(config: dict, scene: str) -> Path:
    """Where a scene's files are: its ``path:``, else the folder the download/builtin/colmap rule makes.

    A ``format: photos`` scene's ``path:`` holds the photos; its scene folder is made by the colmap rule.
    """
    entry = config["scenes"][scene]
    if "path" in entry and entry["format"] != "photos":
        return Path(entry["path"])
    return Path("resources") / "scenes" / scene


def compared_families(config: dict, scene: str) -> list[str]:
    """The student families a scene trains beside its own (``student.compare``), in config order."""
    return list(stage_section(config, "student", scene).get("compare") or [])


def family_section(section: dict, extra: str) -> dict:
    """The student settings of the student kept in ``results/{scene}/student{extra}/``.

    section: the scene's ``student`` settings. extra: ``""`` for its own family (``family``), ``"_NAME"`` for the
    family NAME of its ``compare`` list. The result names that family and has no ``compare`` (which changes no
    student: adding a family to compare reruns nothing already trained).
    """
    out = {k: v for k, v in section.items() if k != "compare"}
    if extra:
        name = extra.removeprefix("_")
        if name not in (section.get("compare") or []):
            raise R2LError(f"student family {name!r} is not in this scene's student.compare "
                           f"({list(section.get('compare') or [])})")
        out["family"] = name
    return out


def coerce(value, hint, where: str):
    """``value`` as the type ``hint`` of a dataclass field, through :func:`as_type`.

    int, float, bool and str are checked and converted; ``X | None`` allows None; tuples are built from
    lists; other hints pass the value through.
    """
    args = typing.get_args(hint)
    if type(None) in args:
        if value is None:
            return None
        hint = next(a for a in args if a is not type(None))
    if typing.get_origin(hint) is tuple and isinstance(value, list):
        return tuple(value)
    if hint not in _KINDS:
        return value
    try:
        return as_type(value, _KINDS[hint])
    except ValueError as err:
        raise R2LError(f"{where}: {value!r} is not valid ({err})") from err


def from_dict(cls, data: dict, where: str = ""):
    """Build dataclass ``cls`` from ``data``; nested dataclass fields from nested dicts; unknown keys fail."""
    where = where or cls.__name__
    if not isinstance(data, dict):
        raise R2LError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise R2LError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(names)}")
    kwargs = {}
    for key, value in data.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = from_dict(hint, value, f"{where}.{key}")
        else:
            kwargs[key] = coerce(value, hint, f"{where}.{key}")
    return cls(**kwargs)
