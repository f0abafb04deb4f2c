"""Whether every SLURM job of a run fits a node of its partition, checked before any job is submitted.

A job that asks for more than any node of its partition has (CPUs, memory, GPUs) or for more time than the
partition allows is accepted by ``sbatch`` and then stays PENDING (reason ``PartitionConfig``) while Snakemake
waits without a word. The Snakefile calls :func:`slurm_misfit` as it is read, in the main Snakemake process: when
the run's executor is ``slurm`` (``--executor slurm``, or ``executor: slurm`` in a profile), it compares each
stage that goes to SLURM (:func:`submitted_stages`, with the config's ``resources:``) with the nodes ``sinfo``
lists for the partition (``slurm_partition`` of ``--default-resources`` or of the profiles, else the cluster's
default partition) and returns one line naming the stage, what it asks and what the partition offers.

The executor and the partition are read from Snakemake's command line and profiles (:func:`run_settings`), as
Snakemake reads them: ``--profile`` (or ``$SNAKEMAKE_PROFILE``), then the workflow profile, later ones winning
key by key; ``--executor`` and ``--default-resources`` on the command line win over the profiles'.
``R2L_SLURM_CHECK=0`` turns the check off. Torch-free (PyYAML and the standard library): the Snakefile imports it.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

# The stages whose rules always go to SLURM (the others run on the submitting host, `localrule: True`).
GPU_STAGES = ("teacher", "pseudo_data", "student", "finetune", "evaluate", "video")
PROFILE_FILE = re.compile(r"(profile|config)(?:\.v(\d+)\+)?\.yaml")  # a profile folder's file (Snakemake's names)
SNAKEMAKE_MAJOR = 9  # versioned profile files (config.v10+.yaml) for a later Snakemake are not read
SINFO_FORMAT = "%c %m %G %l"  # per node: CPUs, memory (MB), generic resources, the partition's time limit
UNITS = {"threads": "CPUs", "mem_mb": "MB", "gpus": "GPUs", "runtime": "min"}


@dataclass(frozen=True)
class Node:
    """What one node of a partition offers a job: CPUs, memory in MB, GPUs, and the partition's time limit in
    minutes (None: no limit)."""

    cpus: int
    mem_mb: int
    gpus: int
    time_limit: float | None


def parse_time_limit(text: str) -> float | None:
    """A SLURM time limit as ``sinfo`` prints it, in minutes (None for ``infinite``): ``1-00:00:00`` (days),
    ``2:00:00`` (hours), ``30:00`` (minutes and seconds), ``45`` (minutes); ValueError for anything else."""
    text = text.strip()
    if text.lower() in ("infinite", "unlimited", "n/a"):
        return None
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text)
    if not match:
        raise ValueError(f"not a SLURM time limit: {text!r}")
    days, *parts = match.groups()
    numbers = [int(p) for p in parts if p is not None]
    if days is not None:  # days-hours[:minutes[:seconds]]
        numbers += [0] * (3 - len(numbers))
        return int(days) * 1440 + numbers[0] * 60 + numbers[1] + numbers[2] / 60
    if len(numbers) == 3:  # hours:minutes:seconds
        return numbers[0] * 60 + numbers[1] + numbers[2] / 60
    return numbers[0] + (numbers[1] / 60 if len(numbers) == 2 else 0)  # minutes[:seconds]


def parse_gres_gpus(text: str) -> int:
    """The GPUs in a node's generic resources as ``sinfo`` prints them (``gpu:h100:4(S:0-1)``, ``gpu:2``,
    ``gpu:a100:2,gpu:v100:1``, ``(null)``): the sum of its ``gpu`` entries' counts."""
    text = re.sub(r"\([^)]*\)", "", text)  # socket lists: (S:0-1), (S:0,1), (IDX:0-3)
    total = 0
    for entry in filter(None, text.split(",")):
        fields = entry.strip().split(":")
        if fields[0] != "gpu":
            continue
        count = fields[-1] if len(fields) > 1 else "1"
        total += int(count) if count.isdigit() else 1  # gpu:h100 (a type, no count): one
    return total


def parse_sinfo(text: str) -> list[Node]:
    """The nodes of ``sinfo -h -N -o "%c %m %G %l"``'s output, one line each (blank lines skipped)."""
    nodes = []
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 4:
            raise ValueError(f"unexpected sinfo line (not CPUs, memory, GRES, time limit): {line!r}")
        cpus, mem = (re.match(r"\d+", field) for field in fields[:2])  # (a grouped count: "2+")
        if not (cpus and mem):
            raise ValueError(f"unexpected sinfo line (CPUs and memory are not numbers): {line!r}")
        nodes.append(Node(int(cpus.group()), int(mem.group()), parse_gres_gpus(fields[2]),
                          parse_time_limit(fields[3])))
    return nodes


def holds(node: Node, ask: dict) -> bool:
    """Whether ``node`` can run a job asking ``ask`` (a ``resources:`` entry: threads, mem_mb, gpus, runtime)."""
    return (ask["threads"] <= node.cpus and ask["mem_mb"] <= node.mem_mb and ask["gpus"] <= node.gpus
            and (node.time_limit is None or ask["runtime"] <= node.time_limit))


def _count(value, unit: str) -> str:
    """``4 CPUs``, ``1 GPU``, ``4000 MB``, ``60 min``, ``1.5 min``."""
    number = f"{value:g}" if isinstance(value, float) else str(value)
    return f"{number} {unit[:-1] if unit in ('CPUs', 'GPUs') and value == 1 else unit}"


def _largest(nodes: list[Node]) -> dict:
    """The most of each resource any node offers, keyed like a ``resources:`` entry (runtime: the time limit)."""
    limits = [n.time_limit for n in nodes]
    return {"threads": max(n.cpus for n in nodes), "mem_mb": max(n.mem_mb for n in nodes),
            "gpus": max(n.gpus for n in nodes), "runtime": None if None in limits else max(limits)}


def shortfall(ask: dict, nodes: list[Node]) -> str:
    """Why no node holds ``ask``: each resource it asks more of than any node offers (``4 CPUs > 2``), or that
    no node has them all at once."""
    most = _largest(nodes)
    over = [f"{_count(ask[k], unit)} > {most[k]:g}" for k, unit in UNITS.items()
            if most[k] is not None and ask[k] > most[k]]
    return ", ".join(over) or "no single node has all of them"


def misfit_line(stage: str, ask: dict, nodes: list[Node], partition: str, others: tuple[str, ...] = ()) -> str:
    """The line saying that the jobs of ``stage`` (asking ``ask``) fit no node of ``partition``, naming the
    ``others`` stages that do not fit either."""
    if not nodes:
        return (f"r2l: SLURM partition {partition!r} has no nodes (sinfo -p {partition} lists none): give an "
                f"existing partition with --default-resources slurm_partition=NAME (sinfo -s lists them)")
    most = _largest(nodes)
    asked = ", ".join(_count(ask[k], unit) for k, unit in UNITS.items())
    offered = ", ".join(_count(most[k], unit) for k, unit in UNITS.items() if k != "runtime")
    limit = "no time limit" if most["runtime"] is None else f"a time limit of {_count(most['runtime'], 'min')}"
    also = f" (and {', '.join(others)}, which do not fit either)" if others else ""
    return (f"r2l: stage {stage} cannot run on SLURM partition {partition!r}: resources.{stage} asks for {asked}; "
            f"its nodes have at most {offered} and {limit} ({shortfall(ask, nodes)}). Lower resources.{stage}{also} "
            f"in your config or choose another partition (--default-resources slurm_partition=NAME)")


def first_misfit(resources: dict, stages: list[str], nodes: list[Node], partition: str) -> str | None:
    """The line for the first of ``stages`` whose ``resources`` entry no node holds, naming the others that do
    not fit either; None when every stage fits."""
    misfits = [stage for stage in stages if not any(holds(node, resources[stage]) for node in nodes)]
    if not misfits:
        return None
    return misfit_line(misfits[0], resources[misfits[0]], nodes, partition, tuple(misfits[1:]))


def submitted_stages(config: dict) -> list[str]:
    """The ``resources:`` stages whose rules a run of ``config`` submits to SLURM: the GPU stages; ``colmap``
    when a run scene is ``format: photos``; ``light`` (the export rule) when ``deploy:`` asks for ONNX files."""
    names = config.get("run_scenes") or list(config["scenes"])
    stages = list(GPU_STAGES)
    if any(config["scenes"][name].get("format") == "photos" for name in names):
        stages.append("colmap")
    if any((config.get("deploy") or {}).get(key) for key in ("export", "viewer", "screenshot")):
        stages.append("light")
    return stages


# ----------------------------------------------------------------------------- the run's executor and partition


def option_values(argv: list[str], names: tuple[str, ...], many: bool = False) -> list[list[str]]:
    """The values of each occurrence of the option ``names`` in ``argv``: ``--opt=v``, ``-ov`` (a short one),
    ``--opt v``, or with ``many`` every word up to the next option (``--default-resources a=1 b=2``)."""
    found = []
    for i, word in enumerate(argv):
        for name in names:
            if word == name:
                values = []
                for value in argv[i + 1:]:
                    if value.startswith("-") or (values and not many):
                        break
                    values.append(value)
                found.append(values)
            elif name.startswith("--") and word.startswith(name + "="):
                found.append([word[len(name) + 1:]])  # --opt=value
            elif not name.startswith("--") and word.startswith(name) and len(word) > len(name):
                found.append([word[len(name):]])  # -ovalue
    return found


def profile_file(name: str, bases: list[Path]) -> Path | None:
    """The YAML file of the profile ``name`` (a file, a folder, or a folder's name in one of the folders ``bases``
    or in Snakemake's user and site config folders), as Snakemake finds it; None when there is none."""
    for path in [base / name for base in bases] + [Path(folder) / name for folder in _config_dirs()]:
        if path.is_file():
            return path
        names = {f.name: PROFILE_FILE.fullmatch(f.name) for f in path.iterdir()} if path.is_dir() else {}
        usable = {n: int(m.group(2) or 0) for n, m in names.items() if m and int(m.group(2) or 0) <= SNAKEMAKE_MAJOR}
        if usable:
            return path / max(usable, key=usable.get)
    return None


def _config_dirs() -> list[str]:
    """Snakemake's user and site config folders (where ``--profile NAME`` is looked for)."""
    try:
        from platformdirs import PlatformDirs
    except ImportError:
        return [str(Path.home() / ".config" / "snakemake"), "/etc/xdg/snakemake"]
    dirs = PlatformDirs("snakemake", "snakemake")
    return [dirs.user_config_dir, dirs.site_config_dir]


def profiles(argv: list[str], environ: dict, workflow_dir: Path, bases: list[Path]) -> list[dict]:
    """The settings of the run's profiles, in the order Snakemake applies them (later ones win): those of
    ``--profile`` (or ``$SNAKEMAKE_PROFILE``), then the workflow profile (``--workflow-profile``, else the
    workflow's ``profiles/default``). A profile named but not found from ``bases`` is a LookupError."""
    names = [v[0] for v in option_values(argv, ("--profile",)) if v]
    names = names or ([environ["SNAKEMAKE_PROFILE"]] if environ.get("SNAKEMAKE_PROFILE") else [])
    names = [] if names == ["none"] else names
    workflow = [v[0] for v in option_values(argv, ("--workflow-profile",)) if v]
    names += [] if workflow[-1:] == ["none"] else workflow[-1:]
    files = [profile_file(name, bases) for name in names]
    if None in files:
        raise LookupError(f"profile {names[files.index(None)]} not found from {bases[0]}")
    if not workflow:
        files.append(profile_file(str(workflow_dir / "profiles" / "default"), []))
    settings = []
    for path in filter(None, files):
        loaded = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        settings.append(loaded if isinstance(loaded, dict) else {})
    return settings


def _resource_items(entries) -> dict:
    """``--default-resources`` entries (``key=value`` words, or a profile's mapping) as a dict of strings."""
    if isinstance(entries, dict):
        return {str(k): str(v) for k, v in entries.items()}
    words = [entries] if isinstance(entries, str) else list(entries or [])
    pairs = (str(word).split("=", 1) for word in words if "=" in str(word))
    return {key.strip(): value.strip().strip("'\"") for key, value in pairs}


def run_settings(argv: list[str], environ: dict, workflow_dir: Path, bases: list[Path]) -> dict:
    """The run's ``executor``, ``partition`` (``slurm_partition`` of the default resources; "" or None: the
    cluster's default) and whether the SLURM plugin picks partitions itself (``partition_config``); relative
    profile paths are looked for from ``bases``."""
    merged: dict = {}
    for settings in profiles(argv, environ, workflow_dir, bases):
        merged.update({key.replace("_", "-"): value for key, value in settings.items()})
    executor = [v[0] for v in option_values(argv, ("--executor", "-e")) if v]
    resources = option_values(argv, ("--default-resources",), many=True)
    partition_config = (option_values(argv, ("--slurm-partition-config",)) or merged.get("slurm-partition-config")
                        or environ.get("SNAKEMAKE_SLURM_PARTITIONS"))
    default_resources = _resource_items(resources[-1] if resources else merged.get("default-resources"))
    return {"executor": executor[-1] if executor else merged.get("executor"),
            "partition": default_resources.get("slurm_partition"), "partition_config": bool(partition_config)}


def _sinfo(*args: str) -> str:
    """``sinfo ARGS``'s output; OSError or CalledProcessError when it cannot be run."""
    return subprocess.run(["sinfo", *args], capture_output=True, text=True, check=True, timeout=60).stdout


def default_partition() -> str | None:
    """The cluster's default partition (the one ``sinfo`` marks with ``*``), or None."""
    names = _sinfo("-h", "-o", "%P").split()
    return next((name.rstrip("*") for name in names if name.endswith("*")), None)


def slurm_misfit(config: dict, workflow_dir: str | Path, argv: list[str], environ: dict) -> str | None:
    """When the run (command line ``argv``, environment ``environ``) submits to SLURM: the line saying which
    stage of ``config`` no node of the partition can hold (:func:`first_misfit`), else None. A check that cannot
    be made (no ``sinfo``, no default partition) prints why on stderr and lets the run go on."""
    if environ.get("R2L_SLURM_CHECK") == "0":
        return None
    # Snakemake has moved to the working directory (--directory): a relative --profile may be from where it started
    bases = [Path.cwd(), *([Path(environ["PWD"])] if environ.get("PWD") else []), Path(workflow_dir)]
    try:
        settings = run_settings(argv[1:], environ, Path(workflow_dir), bases)
    except (LookupError, OSError, yaml.YAMLError) as err:
        return _note(f"cannot read the run's profiles ({err})")
    if settings["executor"] != "slurm" or (settings["partition_config"] and not settings["partition"]):
        return None
    try:
        partition = settings["partition"] or default_partition()
        if not partition:
            return _note("no partition given (slurm_partition) and sinfo marks no default partition")
        nodes = parse_sinfo(_sinfo("-h", "-N", "-p", partition, "-o", SINFO_FORMAT))
    except (OSError, subprocess.SubprocessError, ValueError) as err:
        return _note(f"sinfo failed ({_reason(err)})")
    return first_misfit(config["resources"], submitted_stages(config), nodes, partition)


def _reason(err: Exception) -> str:
    """An error of running or reading ``sinfo`` in a few words."""
    if isinstance(err, subprocess.CalledProcessError):
        lines = (err.stderr or "").strip().splitlines()
        return lines[-1] if lines else f"exit status {err.returncode}"
    return "sinfo not found" if isinstance(err, FileNotFoundError) else str(err)


def _note(why: str) -> None:
    """Say on stderr that the jobs' resources were not checked against the partition, and why."""
    print(f"r2l: not checking the jobs' resources against a SLURM partition: {why}", file=sys.stderr)
