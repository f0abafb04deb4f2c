"""docs/configuration.md, generated from the config files: ``python -m r2l.core.configdoc --write``.

Each key's default and meaning are written once, in ``config/config.yaml``: its value and its comment. The page
adds the paper preset's value (``config/paper.yaml``) and the values the schema allows. Comment rules, checked by
:func:`read_keys`: a key's meaning is its inline comment, continued on the comment lines right below it that sit
further right than the key; comment lines directly above a key, at its indentation, introduce it (a top-level
section's introduction becomes the section's prose: indented lines in it are shown as written). Needs PyYAML only.
"""

from __future__ import annotations

import argparse
import itertools
import re
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from r2l.core.config import STAGE_SECTIONS, load_schema
from r2l.core.errors import R2LError

ROOT = Path(__file__).resolve().parents[2]  # the checkout: the generator is a developer's tool
CONFIG = ROOT / "config" / "config.yaml"
PAPER = ROOT / "config" / "paper.yaml"
PAGE = ROOT / "docs" / "configuration.md"
COMMAND = "python -m r2l.core.configdoc --write"
WIDTH = 116  # the page's prose is wrapped at this width

_KEY = re.compile(r"^( *)([A-Za-z0-9_]+):(?: +(.*))?$")
_DOC_LINK = re.compile(r"\bdocs/([a-z0-9-]+)\.md(#[a-z0-9-]+)?")


@dataclass
class Key:
    """One key of config.yaml as written: where, its value's text and the comments that give its meaning."""

    path: tuple[str, ...]
    line: int
    indent: int
    value: str  # the value as written; "" for a section (a mapping of keys below)
    comment: str = ""  # the inline comment with its continuation lines
    intro: list[str] = field(default_factory=list)  # the comment lines above the key, without "# "

    @property
    def name(self) -> str:
        return ".".join(self.path)

    @property
    def meaning(self) -> str:
        """Intro and comment as one line (a top-level key's intro is prose instead: :func:`_section`)."""
        intro = [] if len(self.path) == 1 else [line.strip() for line in self.intro]
        return " ".join([*intro, self.comment]).strip()


def _split_comment(text: str) -> tuple[str, str | None]:
    """``value  # comment`` -> (value, comment or None); a ``#`` inside quotes or not after a space is text."""
    quote = None
    for i, char in enumerate(text):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or text[i - 1] in " \t"):
            return text[:i].strip(), text[i + 1:].strip()
    return text.strip(), None


def _comment_text(stripped: str) -> str:
    """A comment line's text: the ``#`` and one space after it removed (further indentation is kept)."""
    text = stripped[1:]
    return text[1:] if text.startswith(" ") else text


def parse_config(text: str) -> list[Key]:
    """The keys of a config.yaml written one key a line, in order, with their comments (see the module doc)."""
    keys, stack, block, last = [], [], [], None
    for number, line in enumerate(text.splitlines(), 1):
        stripped, column = line.strip(), len(line) - len(line.lstrip())
        if not stripped:
            if block and keys:
                raise R2LError(f"config line {block[0][0]}: a comment block belongs to no key (put it directly "
                               "above the key it introduces, or below a key's comment, further right)")
            block, last = [], None
        elif stripped.startswith("#"):
            if last is not None and last.comment and not block and column > last.indent:
                last.comment = f"{last.comment} {_comment_text(stripped).strip()}"
            else:
                block.append((number, column, _comment_text(stripped)))
        else:
            last = _key_line(number, line, stack, block)
            keys.append(last)
            block = []
    if block:
        raise R2LError(f"config line {block[0][0]}: the comment lines at the end belong to no key")
    return keys


def _key_line(number: int, line: str, stack: list[Key], block: list) -> Key:
    """The :class:`Key` of a ``key: value  # comment`` line; ``stack`` holds the open sections (updated)."""
    match = _KEY.match(line)
    if not match:
        raise R2LError(f"config line {number}: expected `key: value  # meaning` (one key a line, lists in "
                       f"[flow, style]), got {line.strip()!r}")
    indent = len(match[1])
    while stack and stack[-1].indent >= indent:
        stack.pop()
    misplaced = [n for n, column, _ in block if column != indent]
    if misplaced:
        raise R2LError(f"config line {misplaced[0]}: a comment above a key sits at the key's indentation")
    value, comment = _split_comment(match[3] or "")
    key = Key((*(stack[-1].path if stack else ()), match[2]), number, indent, value, comment or "",
              [text for _, _, text in block])
    if not value:
        stack.append(key)
    return key


def _paths(node, path: tuple = ()):
    """(path, value) of every key of a nested mapping, sections included, depth first."""
    for key, value in node.items():
        yield (*path, key), value
        if isinstance(value, dict):
            yield from _paths(value, (*path, key))


def read_keys(text: str) -> list[Key]:
    """:func:`parse_config`, checked against what YAML reads: the same keys, the same values."""
    keys = parse_config(text)
    loaded = dict(_paths(yaml.safe_load(text)))
    parsed = {key.path: key for key in keys}
    problems = [f"{'.'.join(map(str, p))}: not one key a line (write mappings in block style)" for p in loaded
                if p not in parsed]
    problems += [f"{key.name}: read twice or not a key YAML reads" for key in keys
                 if key.path not in loaded or parsed[key.path] is not key]
    for key in keys:
        if key.path in loaded and (key.value == "") != isinstance(loaded[key.path], dict):
            problems.append(f"{key.name} (line {key.line}): a section needs keys below it, a key a value")
        elif key.value and yaml.safe_load(key.value) != loaded.get(key.path):
            problems.append(f"{key.name} (line {key.line}): {key.value!r} is not what YAML reads")
    if problems:
        raise R2LError("config/config.yaml cannot be documented:\n  " + "\n  ".join(problems))
    return keys


def uncommented(keys: list[Key]) -> list[str]:
    """The keys with neither a comment nor an introduction."""
    return [key.name for key in keys if not (key.comment or key.intro)]


def _resolve(node: dict, defs: dict) -> dict:
    while "$ref" in node:
        node = defs[node["$ref"].split("/")[-1]]
    return node


def schema_node(schema: dict, path: tuple[str, ...]) -> dict | None:
    """The schema of the config key at ``path`` (a scene name takes the scene entry's), or None."""
    defs, node = schema["$defs"], schema
    for key in path:
        node = _resolve(node, defs)
        if key in node.get("properties", {}):
            node = node["properties"][key]
        elif isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        else:
            return None
    return _resolve(node, defs)


def _schema_paths(node: dict, defs: dict, path: tuple = ()):
    """The key paths the schema names through ``properties`` (not a scene's keys: scenes are free names)."""
    for key, child in _resolve(node, defs).get("properties", {}).items():
        yield (*path, key)
        yield from _schema_paths(child, defs, (*path, key))


def schema_mismatches(keys: list[Key], schema: dict) -> list[str]:
    """A line per key in config.yaml but not in the schema, or in the schema but not in config.yaml."""
    names = {key.path for key in keys}
    out = [f"{key.name}: in config/config.yaml but not in the schema" for key in keys
           if schema_node(schema, key.path) is None]
    out += [f"{'.'.join(p)}: in the schema but not in config/config.yaml" for p in
            _schema_paths(schema, schema["$defs"]) if p not in names]
    return out


def scene_entry_problems(keys: list[Key], schema: dict) -> list[str]:
    """A scene entry's own keys (its source) must be named in the introduction of ``scenes:``; the rest of its
    keys must be those of ``scene_defaults`` and the stage sections."""
    defs = schema["$defs"]
    scene, settings = defs["scene"]["properties"], defs["scene_settings"]["properties"]
    out = [f"scenes.<name>.{k}: the schema's scene entry lacks this key of scene_defaults or stage section"
           for k in (*settings, *STAGE_SECTIONS) if k not in scene]
    intro = " ".join(next((key.intro for key in keys if key.path == ("scenes",)), []))
    own = [k for k in scene if k not in settings and k not in STAGE_SECTIONS]
    out += [f"scenes.<name>.{k}: not named as `{k}:` in the comment above scenes: in config/config.yaml"
            for k in own if f"{k}:" not in intro]
    return out


def _flow(value) -> str:
    """A value in YAML flow style, for the page."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(map(_flow, value)) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_flow(v)}" for k, v in value.items()) + "}"
    return str(value)


def _bounds(node: dict) -> str:
    """A number's range: ``>= 1``, ``> 0``, ``in [0, 1]``, ``in (0, 1]``, ``multiple of 2``."""
    lo = ("[", node["minimum"]) if "minimum" in node else ("(", node.get("exclusiveMinimum"))
    hi = ("]", node["maximum"]) if "maximum" in node else (")", node.get("exclusiveMaximum"))
    parts = []
    if lo[1] is not None and hi[1] is not None:
        parts.append(f"in {lo[0]}{lo[1]}, {hi[1]}{hi[0]}")
    elif lo[1] is not None:
        parts.append(f"{'>=' if lo[0] == '[' else '>'} {lo[1]}")
    elif hi[1] is not None:
        parts.append(f"{'<=' if hi[0] == ']' else '<'} {hi[1]}")
    if "multipleOf" in node:
        parts.append(f"multiple of {node['multipleOf']}")
    return ", ".join(parts)


def _array(node: dict, defs: dict) -> str:
    """``list of <items>`` with its length rule."""
    items = allowed(node.get("items", {}), defs) or "values"
    low, high = node.get("minItems"), node.get("maxItems")
    size = (f"{low} items" if low == high and low is not None else f"at least {low}" if low
            else f"at most {high}" if high is not None else "")
    size = ", ".join(s for s in (size, "each once" if node.get("uniqueItems") else "") if s)
    return f"list of {items}" + (f" ({size})" if size else "")


def allowed(node: dict, defs: dict) -> str:
    """What the schema allows for a key, in a few words (a node's ``description`` where it has one)."""
    node = _resolve(node, defs)
    if "description" in node:
        return node["description"]
    if "enum" in node or "const" in node:
        return ", ".join(f"`{_flow(v)}`" for v in node.get("enum", [node.get("const")]))
    kinds = node.get("type", [])
    words = []
    for kind in [kinds] if isinstance(kinds, str) else kinds:
        if kind in ("integer", "number"):
            words.append(f"{kind} {_bounds(node)}".strip())
        elif kind == "array":
            words.append(_array(node, defs))
        elif kind != "object":
            words.append({"null": "`null`", "boolean": "`true`, `false`"}.get(kind, kind))
    return " or ".join(words)


def _links(text: str) -> str:
    """``docs/NAME.md`` in a comment -> a link to that page of the site."""
    return _DOC_LINK.sub(lambda m: f"[{m[1].replace('-', ' ').capitalize()}]({m[1]}.md{m[2] or ''})", text)


def _cell(text: str) -> str:
    """Text for a table cell: pipes outside code spans escaped."""
    parts = text.split("`")
    return "`".join(p if i % 2 else p.replace("|", r"\|") for i, p in enumerate(parts))


def _line_kind(line: str) -> str:
    return "blank" if not line.strip() else "pre" if line.startswith(" ") else "text"


def prose(lines: list[str]) -> list[str]:
    """Markdown blocks of introduction lines: paragraphs, and the indented lines as text blocks."""
    blocks = []
    for what, group in itertools.groupby(lines, _line_kind):
        group = list(group)
        if what == "text":
            text = _links(" ".join(line.strip() for line in group))
            blocks.append(textwrap.fill(text, WIDTH, break_long_words=False, break_on_hyphens=False))
        elif what == "pre":
            cut = min(len(line) - len(line.lstrip()) for line in group)
            blocks.append("\n".join(["```text", *(line[cut:].rstrip() for line in group), "```"]))
    return blocks


def _lookup(tree: dict, path: tuple[str, ...]):
    """(True, value) where ``tree`` sets ``path``, else (False, None)."""
    for key in path:
        if not isinstance(tree, dict) or key not in tree:
            return False, None
        tree = tree[key]
    return True, tree


def _row(key: Key, paper: dict, schema: dict) -> str:
    default = yaml.safe_load(key.value) if key.value else None
    found, preset = _lookup(paper, key.path)
    preset = f"`{_flow(preset)}`" if key.value and found and preset != default else ""
    node = schema_node(schema, key.path) or {}
    cells = [f"`{key.name}`", f"`{key.value}`" if key.value else "", preset,
             allowed(node, schema["$defs"]) if key.value else "", _links(key.meaning)]
    return "| " + " | ".join(map(_cell, cells)) + " |"


HEADER = """\
# Configuring r2l

<!-- Generated by `{command}` from config/config.yaml, config/paper.yaml and the schema: edit those. -->

The workflow reads `config/config.yaml` (the defaults: the built-in scene with small models, minutes on a laptop
CPU), then every file given with `--configfile`, each merged over the ones before. The merged config is
validated against `r2l/schemas/config.schema.yaml` (shipped inside the package) before any job runs: an unknown
key or a wrong value is an error that names the key.

| file | what it is |
|---|---|
| `config/config.yaml` | every key, its default and its meaning (the key's comment): this page is made from it |
| `config/paper.yaml` | the paper's settings for every stage (days of GPU time per scene) |
| `config/lego_fast.yaml` | lego at 400x400 with the fast grid teacher, for a GPU |
| `config/lego_100.yaml` | lego at 100x100 on a CPU (the run measured in [Results](results.md)) |
| `config/datasets.example.yaml` | `scenes:` entries for the paper's 8 Blender and 8 LLFF scenes |
| `.test/config/config.yaml` | the tiny config CI runs end to end |

Example: `snakemake --cores 1 --resources gpu=1 --configfile config/datasets.example.yaml config/paper.yaml`
(or `r2l run --configfile ...`).

The tables list every key of `config/config.yaml`: its default; the value the paper preset (`config/paper.yaml`)
gives it, where that differs; the values the schema allows; its meaning. Keys whose default is `null` are filled
in from the scene's format when a stage runs (the log says which value was used).
"""

RESOURCES = """\
Each stage has four keys:

| key | on one machine | on SLURM (`profiles/slurm`) |
|---|---|---|
| `threads` | the rule's `threads:`, capped at `--cores` | `--cpus-per-task` |
| `mem_mb` | the `mem_mb` resource (limits only with `--resources mem_mb=...`) | `--mem` (MB) |
| `runtime` | the `runtime` resource (minutes; not enforced) | `--time` (minutes); a training job killed at it \
resumes from its checkpoint when rerun |
| `gpus` | the `gpu` resource, counted against `--resources gpu=G`; 0: a CPU job | `--gpus` |"""

NOTES = {"resources": RESOURCES}  # prose a section's introduction does not hold (tables)
TABLE = "| key | default | paper preset | allowed | meaning |\n|---|---|---|---|---|"


def _section(top: Key, below: list[Key], paper: dict, schema: dict) -> str:
    """The page's section of one top-level key: its introduction, then a table of it or of its keys."""
    blocks = [f"## `{top.name}`", *prose(top.intro)]
    if top.comment and not top.value:
        blocks += prose([top.comment])
    if top.name in NOTES:
        blocks.append(NOTES[top.name])
    rows = [top] if top.value else below
    blocks.append("\n".join([TABLE, *(_row(key, paper, schema) for key in rows)]))
    return "\n\n".join(blocks)


def render_page(keys: list[Key], paper: dict, schema: dict) -> str:
    """The configuration page of config.yaml's ``keys``, the paper preset ``paper`` and the config ``schema``."""
    sections = [HEADER.format(command=COMMAND).rstrip()]
    for top in (key for key in keys if len(key.path) == 1):
        below = [key for key in keys if len(key.path) > 1 and key.path[0] == top.name]
        sections.append(_section(top, below, paper, schema))
    return "\n\n".join(sections) + "\n"


def build_page() -> str:
    """docs/configuration.md as the config files make it; R2LError where they disagree or a key lacks a meaning."""
    if not CONFIG.is_file():
        raise R2LError(f"{CONFIG} not found: the page is generated in a checkout of r2l")
    keys, schema = read_keys(CONFIG.read_text()), load_schema()
    problems = [f"{name}: no comment" for name in uncommented(keys)]
    problems += schema_mismatches(keys, schema) + scene_entry_problems(keys, schema)
    if problems:
        raise R2LError("config/config.yaml and the schema disagree or lack meanings:\n  " + "\n  ".join(problems))
    return render_page(keys, yaml.safe_load(PAPER.read_text()), schema)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m r2l.core.configdoc", description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"rewrite {PAGE.relative_to(ROOT)}")
    parser.add_argument("--check", action="store_true", help="exit 1 when the page is not what the configs make")
    args = parser.parse_args(argv)
    page = build_page()
    if args.check:
        same = PAGE.is_file() and PAGE.read_text() == page
        print(f"{PAGE.relative_to(ROOT)} is {'up to date' if same else f'out of date: run {COMMAND}'}")
        return 0 if same else 1
    if args.write:
        PAGE.write_text(page)
    else:
        sys.stdout.write(page)
    return 0


if __name__ == "__main__":
    sys.exit(main())
