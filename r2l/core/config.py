"""The workflow config: validation against the JSON schema, per-scene merging, dataclass building.

A config (``config/config.yaml``) has a ``scenes:`` mapping and one section per stage (``colmap`` for
photos scenes, ``teacher``, ``pseudo_data``, ``student``, ``finetune``, ``evaluate``). A scene entry may
override any stage setting under a key of the stage's name; :func:`stage_section` merges the two.
"""

from __future__ import annotations

import copy
import re
import dataclasses
import typing
from importlib import resources

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
    return yaml.safe_load(SCHEMA.read_text())


_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def _numbers_from_strings(config: dict, validator) -> None:
    """Turn numbers that YAML read as strings (``5e-4``: YAML 1.1 wants ``5.0e-4``) into numbers, in place,
    wherever the schema asks for a number; other strings are left for validation to report."""
    for error in list(validator.iter_errors(config)):
        wanted = error.schema.get("type") if error.validator == "type" else None
        wanted = [wanted] if isinstance(wanted, str) else wanted or []
        if not isinstance(error.instance, str) or not _NUMBER.match(error.instance.strip()):
            continue
        if "number" in wanted or ("integer" in wanted and float(error.instance).is_integer()):
            parent = config
            for key in list(error.absolute_path)[:-1]:
                parent = parent[key]
            value = float(error.instance)
            parent[error.absolute_path[-1]] = int(value) if "number" not in wanted else value


def validate_config(config: dict, source: str = "config") -> dict:
    """Validate ``config`` against the schema, filling defaults; raise R2LError listing every problem."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(load_schema())
    _numbers_from_strings(config, validator)
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


def coerce(value, hint, where: str):
    """``value`` as the simple type ``hint`` (YAML reads ``5e-4`` as a string, ``1`` for ``1.0``).

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
    if hint not in (int, float, bool, str):
        return value
    try:
        if hint is bool or isinstance(value, bool):
            if not (hint is bool and isinstance(value, bool)):
                raise ValueError(f"expected {hint.__name__}")
            return value
        if hint is int:
            if float(value) != int(float(value)):
                raise ValueError("expected an integer")
            return int(float(value))
        if hint is float:
            return float(value)
        if not isinstance(value, str):
            raise ValueError("expected a string")
        return value
    except (TypeError, ValueError) as err:
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
