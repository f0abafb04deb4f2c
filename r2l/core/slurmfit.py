"""Whether every SLURM job of a run fits a node of its partition, checked before any job is submitted.

A job that asks for more than any node of its partition has (CPUs, memory, GPUs) or for more time than the
partition allows is accepted by ``sbatch`` and then stays PENDING (reason ``PartitionConfig``) while Snakemake
waits without a word. The Snakefile calls :func:`slurm_misfit` as it is read, in the main Snakemake process: when
the run's executor is ``slurm`` (``--executor slurm``, or ``executor: slurm`` in a profile), it compares each
stage that goes to SLURM (:func:`submitted_stages`) with the nodes ``sinfo`` lists for the partition its rule is
sent to, and returns one line naming the stage, what it asks, what the partition offers and which override (if
any) set a value.

What a stage's job asks is worked out as Snakemake and the SLURM plugin do (:func:`stage_jobs`): the default
resources (``--default-resources``, or a profile's ``default-resources``), then the rule's own values (the
config's ``resources.<stage>``: ``threads``, and ``gpu``, ``mem_mb`` and ``runtime``, which the config always
sets, so default ``mem_mb``/``runtime`` never win), then ``--set-resources RULE:KEY=VALUE`` and ``--set-threads
RULE=N`` (or a profile's ``set-resources``/``set-threads``). Then ``cpus_per_task`` (or ``cpus_per_gpu``) wins
over the threads, ``mem_mb_per_cpu`` over ``mem_mb``, and the GPUs are the most of ``gpu``, a ``gres`` and a
``slurm_extra`` ``--gres``/``--gpus`` (threads above ``--max-threads`` are lowered to it, as Snakemake does); a
GPU model named there (``gpu:a100:1``, ``--gpus=a100:2``) must be one a node has that many of; a rule's
``slurm_partition`` picks the partition its nodes are read from.

The executor, partition and overrides are read from Snakemake's command line and profiles (:func:`run_settings`,
:func:`run_overrides`), as Snakemake reads them: ``--profile`` (or ``$SNAKEMAKE_PROFILE``), then the workflow
profile, later ones winning key by key; an option on the command line replaces the profiles' value of it. An
override the check cannot read (a Python expression) leaves that value unchecked, said in one line; malformed
override text is skipped (Snakemake reports it). ``R2L_SLURM_CHECK=0`` turns the check off. Torch-free (PyYAML
and the standard library): the Snakefile imports it.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import yaml

# The stages whose rules always go to SLURM (the others run on the submitting host, `localrule: True`).
GPU_STAGES = ("teacher", "pseudo_data", "student", "finetune", "evaluate", "video")
# The rule that each stage submits to SLURM (workflow/rules/*.smk; light: the export rule, the one light rule
# that is not a `localrule`): --set-resources and --set-threads name rules.
STAGE_RULES = {"teacher": "train_teacher", "pseudo_data": "pseudo_data_part", "student": "train_student",
               "finetune": "finetune", "evaluate": "evaluate", "video": "video", "colmap": "colmap",
               "light": "export"}
PROFILE_FILE = re.compile(r"(profile|config)(?:\.v(\d+)\+)?\.yaml")  # a profile folder's file (Snakemake's names)
SNAKEMAKE_MAJOR = 9  # versioned profile files (config.v10+.yaml) for a later Snakemake are not read
SINFO_FORMAT = "%c %m %G %l"  # per node: CPUs, memory (MB), generic resources, the partition's time limit
UNITS = {"threads": "CPUs", "mem_mb": "MB", "gpus": "GPUs", "runtime": "min"}
NUMBER_RESOURCES = ("gpu", "cpus_per_task", "cpus_per_gpu", "mem_mb_per_cpu")  # what the plugin reads as counts
TEXT_RESOURCES = ("gres", "slurm_extra", "slurm_partition")
SIZE = re.compile(r"(\d{1,18}(?:\.\d{1,18})?)\s*(?:([kmgtpe])(i)?)?b?", re.IGNORECASE)  # 64G, 64GB, 64GiB, 500M
TIMESPAN = re.compile(r"(\d{1,18}(?:\.\d{1,18})?)\s*([a-z]*)", re.IGNORECASE)  # 2h, 90m, 1d, 1.5 hours
SECONDS = {"s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1, "m": 60, "min": 60, "mins": 60, "minute": 60,
           "minutes": 60, "h": 3600, "hour": 3600, "hours": 3600, "d": 86400, "day": 86400, "days": 86400,
           "w": 604800, "week": 604800, "weeks": 604800, "": 1}
EXTRA_GPUS = re.compile(r"(?:--gpus(?:-per-node)?[=\s]|-G\s*)(?:([\w.]+):)?(\d{1,9})\b")  # in slurm_extra
EXTRA_GRES = re.compile(r"--gres[=\s](\S+)")


@dataclass(frozen=True)
class Node:
    """What one node of a partition offers a job: CPUs, memory in MB, GPUs, and the partition's time limit in
    minutes (None: no limit); ``gpu_models``: its GPUs by model, ``((model, count), ...)`` (those its GRES names)."""

    cpus: int
    mem_mb: int
    gpus: int
    time_limit: float | None
    gpu_models: tuple[tuple[str, int], ...] = ()

    def gpus_of(self, model: str) -> int:
        """How many GPUs of ``model`` the node has."""
        return sum(count for name, count in self.gpu_models if name == model)


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


def parse_gres_models(text: str) -> tuple[tuple[str, int], ...]:
    """The ``gpu`` entries of generic resources as ``sinfo`` prints them or a job asks them (``gpu:h100:4(S:0-1)``,
    ``gpu:2``, ``gpu:a100:2,gpu:v100:1``, ``gpu:h100``, ``(null)``): ``((model, count), ...)``, the model ""
    where none is named, the count 1 where none is given."""
    text = re.sub(r"\([^)]*\)", "", text)  # socket lists: (S:0-1), (S:0,1), (IDX:0-3)
    entries = []
    for entry in filter(None, text.split(",")):
        fields = entry.strip().split(":")
        if fields[0] != "gpu":
            continue
        count = fields[-1] if len(fields) > 1 else "1"
        if re.fullmatch(r"\d{1,9}", count):
            entries.append((":".join(fields[1:-1]), int(count)))
        else:  # gpu:h100 (a model, no count): one
            entries.append((":".join(fields[1:]), 1))
    return tuple(entries)


def parse_gres_gpus(text: str) -> int:
    """The GPUs in generic resources (:func:`parse_gres_models`): the sum of its ``gpu`` entries' counts."""
    return sum(count for _, count in parse_gres_models(text))


def gres_model(text: str) -> str | None:
    """The GPU model generic resources ask for (``gpu:a100:1`` -> ``a100``), None when they name none."""
    models = [model for model, _ in parse_gres_models(text) if model]
    return models[0] if models else None


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
        gres = parse_gres_models(fields[2])
        nodes.append(Node(int(cpus.group()), int(mem.group()), sum(count for _, count in gres),
                          parse_time_limit(fields[3]), tuple(entry for entry in gres if entry[0])))
    return nodes


def _number(text: str) -> int | float | None:
    """``4000`` as 4000, ``2.5`` as 2.5, ``-1`` as -1; None for anything else (an expression, a word)."""
    if not re.fullmatch(r"-?\d{1,18}(?:\.\d{1,18})?", text):
        return None
    return float(text) if "." in text else int(text)


def parse_size_mb(text: str) -> int | None:
    """A ``mem`` resource in MB as Snakemake reads it: ``4000`` (MB), ``64G``/``64GB`` (10**9 bytes), ``64GiB``
    (2**30 bytes), ``500M``; None for anything else."""
    if re.fullmatch(r"\d{1,18}", text):
        return int(text)
    match = SIZE.fullmatch(text)
    if not match:
        return None
    number, prefix, binary = match.groups()
    power = "kmgtpe".index(prefix.lower()) + 1 if prefix else 0
    return max(math.ceil(float(number) * (1024 if binary else 1000) ** power / 1e6), 1)


def parse_minutes(text: str) -> int | None:
    """A ``runtime`` resource in minutes as Snakemake reads it: ``90`` (minutes), ``2h``, ``90m``, ``1d``,
    ``1.5 hours``; None for anything else."""
    if re.fullmatch(r"\d{1,18}", text):
        return int(text)
    match = TIMESPAN.fullmatch(text)
    if not match or match.group(2).lower() not in SECONDS:
        return None
    return max(int(round(float(match.group(1)) * SECONDS[match.group(2).lower()]) / 60), 1)


def parse_resource(key: str, text) -> tuple[str, object] | None:
    """A resource the check reads, from its name and value text: (``mem_mb`` for mem/mem_mb/mem_mib, in MB; the
    others by their name), the value None when it cannot be read; None for a resource the check ignores."""
    text = str(text).strip().strip("'\"")
    if key in ("mem", "mem_mb", "mem_mib"):
        value = parse_size_mb(text) if key == "mem" else _number(text)
        if key == "mem_mib" and value is not None:
            value = math.floor(value / 0.95367431640625)  # as Snakemake's mib_to_mb
        return "mem_mb", value
    if key == "runtime":
        return key, parse_minutes(text)
    if key in NUMBER_RESOURCES:
        return key, _number(text)
    return (key, text) if key in TEXT_RESOURCES else None


def slurm_extra_gpus(text: str) -> int:
    """The GPUs per node that ``slurm_extra`` asks for (``--gres=gpu:a100:2``, ``--gpus=2``, ``-G 2``): the
    most of them, 0 when it asks for none."""
    counts = [parse_gres_gpus(gres) for gres in EXTRA_GRES.findall(text)]
    return max(counts + [int(count) for _, count in EXTRA_GPUS.findall(text)], default=0)


def slurm_extra_model(text: str) -> str | None:
    """The GPU model ``slurm_extra`` asks for (``--gres=gpu:a100:2``, ``--gpus=a100:2``), None when it names none."""
    models = [gres_model(gres) for gres in EXTRA_GRES.findall(text)] + [m for m, _ in EXTRA_GPUS.findall(text)]
    return next((m for m in models if m), None)


# ----------------------------------------------------------------------------- what a stage's job asks for


@dataclass(frozen=True)
class Setting:
    """One resource's value (None: one the check cannot read) and the override that set it (None: the rule's
    own value, the config's ``resources.<stage>``)."""

    value: object
    origin: str | None = None


@dataclass(frozen=True)
class Job:
    """What the SLURM job of ``stage`` (rule ``rule``) asks: ``ask`` keyed like ``UNITS`` (None: not known),
    ``origins`` (ask key, or ``slurm_partition``, -> the override that set it), the partition ("" or None: the
    cluster's default) and the overrides whose values could not be read (``unread``)."""

    stage: str
    rule: str
    ask: dict
    origins: dict = field(default_factory=dict)
    partition: str | None = None
    unread: tuple[str, ...] = ()


def _gpu_ask(res: dict) -> Setting:
    """The GPUs per node a job asks for: the most of ``gpu``, ``gres``'s and ``slurm_extra``'s GPUs."""
    counts = []
    for key, count in (("gpu", None), ("gres", parse_gres_gpus), ("slurm_extra", slurm_extra_gpus)):
        setting = res.get(key)
        if setting is None:
            continue
        if setting.value is None:
            return Setting(None, setting.origin)
        counts.append(Setting(count(setting.value) if count else setting.value, setting.origin))
    return max(counts, key=lambda s: s.value, default=Setting(0))


def _cpu_ask(res: dict, threads: Setting, gpus: Setting) -> Setting:
    """The CPUs a job asks for, as the plugin sets them: ``cpus_per_task`` (below 0: none given, so one), else
    for a GPU job ``cpus_per_gpu`` times its GPUs, else the rule's threads."""
    per_task, per_gpu = res.get("cpus_per_task", Setting(0)), res.get("cpus_per_gpu", Setting(0))
    gpu_job = bool(res.get("gpu", Setting(0)).value) or "gpu" in str(res.get("gres", Setting("")).value)
    if per_task.value is None or per_task.value:
        return Setting(per_task.value and max(per_task.value, 1), per_task.origin)
    if gpu_job and (per_gpu.value is None or per_gpu.value):
        if per_gpu.value is None or gpus.value is None:
            return Setting(None, per_gpu.origin)
        return Setting(per_gpu.value * gpus.value if per_gpu.value > 0 else 1, per_gpu.origin)
    return threads


def _gpu_model(res: dict) -> Setting:
    """The GPU model a job asks for (``gres``, else ``slurm_extra``): its name, or None for any model."""
    for key, model in (("gres", gres_model), ("slurm_extra", slurm_extra_model)):
        setting = res.get(key)
        if setting is not None and setting.value is not None and (name := model(str(setting.value))):
            return Setting(name, setting.origin)
    return Setting(None)


def job_ask(res: dict, threads: Setting) -> tuple[dict, dict]:
    """What a job with the resources ``res`` (name -> Setting) and ``threads`` asks for, keyed like ``UNITS``
    (None: a value the check cannot read) plus ``gpu_model`` (None: any), and the overrides that set each (ask
    key -> origin)."""
    gpus = _gpu_ask(res)
    cpus = _cpu_ask(res, threads, gpus)
    mem = res["mem_mb"]
    per_cpu = res.get("mem_mb_per_cpu", Setting(0))
    if per_cpu.value is None or per_cpu.value:  # the plugin's --mem-per-cpu wins over --mem
        mem = Setting(None if None in (per_cpu.value, cpus.value) else per_cpu.value * cpus.value, per_cpu.origin)
    model = _gpu_model(res)
    if model.origin and not gpus.origin:  # an override that names a model decides which GPUs count
        gpus = Setting(gpus.value, model.origin)
    settings = {"threads": cpus, "mem_mb": mem, "gpus": gpus, "runtime": res["runtime"], "gpu_model": model}
    ask = {key: setting.value for key, setting in settings.items()}
    return ask, {key: setting.origin for key, setting in settings.items() if setting.origin}


def holds(node: Node, ask: dict) -> bool:
    """Whether ``node`` can run a job asking ``ask`` (threads, mem_mb, gpus, runtime; None: not checked)."""
    most = {"threads": node.cpus, "mem_mb": node.mem_mb, "gpus": _node_gpus(node, ask), "runtime": node.time_limit}
    return all(ask[key] is None or most[key] is None or ask[key] <= most[key] for key in UNITS)


def _node_gpus(node: Node, ask: dict) -> int:
    """The GPUs of ``node`` a job asking ``ask`` can use: those of its model when it names one."""
    model = ask.get("gpu_model")
    return node.gpus if model is None else node.gpus_of(model)


def _num(value) -> str:
    """``4000``, ``1.5``, ``1000000`` (not 1e+06), ``?`` for a value not known."""
    if value is None:
        return "?"
    return f"{value:.6g}" if isinstance(value, float) and not value.is_integer() else str(int(value))


def _count(value, unit: str) -> str:
    """``4 CPUs``, ``1 GPU``, ``1 a100 GPU``, ``4000 MB``, ``60 min``, ``1.5 min``, ``? MB``."""
    return f"{_num(value)} {unit[:-1] if unit.endswith(('CPUs', 'GPUs')) and value == 1 else unit}"


def _largest(nodes: list[Node], ask: dict) -> dict:
    """The most of each resource any node offers a job asking ``ask``, keyed like a ``resources:`` entry (runtime:
    the time limit; GPUs: of the model it asks for, if any)."""
    limits = [n.time_limit for n in nodes]
    return {"threads": max(n.cpus for n in nodes), "mem_mb": max(n.mem_mb for n in nodes),
            "gpus": max(_node_gpus(n, ask) for n in nodes), "runtime": None if None in limits else max(limits)}


def _gpu_unit(ask: dict) -> str:
    """``GPUs``, or ``a100 GPUs`` when the job asks for a model."""
    return "GPUs" if ask.get("gpu_model") is None else f"{ask['gpu_model']} GPUs"


def _models(nodes: list[Node]) -> str:
    """The GPU models the nodes name (``h100, v100``), or ``none named``."""
    return ", ".join(sorted({m for n in nodes for m, _ in n.gpu_models})) or "none named"


def _over(ask: dict, most: dict) -> list[str]:
    """The ask keys that ask more than any node offers."""
    return [key for key in UNITS if None not in (ask[key], most[key]) and ask[key] > most[key]]


def shortfall(ask: dict, nodes: list[Node]) -> str:
    """Why no node holds ``ask``: each resource it asks more of than any node offers (``4 CPUs > 2``), or that
    no node has them all at once."""
    most, units = _largest(nodes, ask), {**UNITS, "gpus": _gpu_unit(ask)}
    over = [f"{_count(ask[key], units[key])} > {_num(most[key])}" for key in _over(ask, most)]
    if ask.get("gpu_model") is not None and "gpus" in _over(ask, most):
        over.append(f"GPU models of the nodes: {_models(nodes)}")
    return ", ".join(over) or "no single node has all of them"


def _to_lower(stage: str, ask: dict, nodes: list[Node], origins: dict, also: str) -> str:
    """What to lower: ``resources.<stage>`` in the config and/or the overrides that set what is too much."""
    keys = _over(ask, _largest(nodes, ask)) or list(UNITS)
    overrides = list(dict.fromkeys(origins[key] for key in keys if key in origins))
    config = [f"resources.{stage}{also} in your config"] if any(key not in origins for key in keys) else []
    return " and ".join(config + overrides) + ("" if config else also)


def misfit_line(stage: str, ask: dict, nodes: list[Node], partition: str, others: tuple[str, ...] = (),
                origins: dict | None = None) -> str:
    """The line saying that the jobs of ``stage`` (asking ``ask``) fit no node of ``partition``, naming the
    overrides that set a value (``origins``: ask key or slurm_partition -> override) and the ``others`` stages
    that do not fit either."""
    origins, rule = origins or {}, STAGE_RULES.get(stage, stage)
    per_rule = f" (slurm_partition from {origins['slurm_partition']})" if "slurm_partition" in origins else ""
    where = f"--set-resources {rule}:" if per_rule else "--default-resources "
    if not nodes:
        return (f"r2l: SLURM partition {partition!r}{per_rule} has no nodes (sinfo -p {partition} lists none): "
                f"give an existing partition with {where}slurm_partition=NAME (sinfo -s lists them)")
    most = _largest(nodes, ask)
    asked = ", ".join(_count(ask[k], unit) for k, unit in {**UNITS, "gpus": _gpu_unit(ask)}.items())
    set_by = "; ".join(f"{key} {_num(ask[key])} from {origins[key]}" for key in UNITS if key in origins)
    asks = f"rule {rule} asks for {asked} ({set_by})" if set_by else f"resources.{stage} asks for {asked}"
    offered = ", ".join(_count(most[k], unit) for k, unit in {**UNITS, "gpus": _gpu_unit(ask)}.items()
                        if k != "runtime")
    limit = "no time limit" if most["runtime"] is None else f"a time limit of {_count(most['runtime'], 'min')}"
    also = f" (and {', '.join(others)}, which do not fit either)" if others else ""
    return (f"r2l: stage {stage} cannot run on SLURM partition {partition!r}{per_rule}: {asks}; its nodes have at "
            f"most {offered} and {limit} ({shortfall(ask, nodes)}). Lower {_to_lower(stage, ask, nodes, origins, also)}"
            f" or choose another partition ({where}slurm_partition=NAME)")


def first_job_misfit(jobs: list[Job], nodes_of: Callable[[str], list[Node]]) -> str | None:
    """The line for the first of ``jobs`` that no node of its partition (``nodes_of``) holds, naming the others
    that do not fit either; None when every job fits."""
    misfits = [job for job in jobs if not any(holds(node, job.ask) for node in nodes_of(job.partition))]
    if not misfits:
        return None
    job = misfits[0]
    return misfit_line(job.stage, job.ask, nodes_of(job.partition), job.partition,
                       tuple(other.stage for other in misfits[1:]), job.origins)


def first_misfit(resources: dict, stages: list[str], nodes: list[Node], partition: str) -> str | None:
    """The line for the first of ``stages`` whose ``resources`` entry (no overrides) no node of ``partition``
    holds, naming the others that do not fit either; None when every stage fits."""
    jobs = [Job(stage, STAGE_RULES.get(stage, stage), resources[stage], partition=partition) for stage in stages]
    return first_job_misfit(jobs, lambda _: nodes)


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


# ------------------------------------------------------------------------ the run's executor, partition, overrides


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


def profiles(argv: list[str], environ: dict, workflow_dir: Path, bases: list[Path]) -> list[tuple[Path, dict]]:
    """The files and settings of the run's profiles, in the order Snakemake applies them (later ones win): those
    of ``--profile`` (or ``$SNAKEMAKE_PROFILE``), then the workflow profile (``--workflow-profile``, else the
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
        settings.append((path, loaded if isinstance(loaded, dict) else {}))
    return settings


def merged_profiles(argv: list[str], environ: dict, workflow_dir: Path, bases: list[Path]) -> dict:
    """The profiles' settings merged key by key (``default_resources`` spelled ``default-resources``), each as
    (value, the profile file it is from)."""
    merged: dict = {}
    for path, settings in profiles(argv, environ, workflow_dir, bases):
        merged.update({str(key).replace("_", "-"): (value, path) for key, value in settings.items()})
    return merged


def _entries(value, nested: bool) -> list[str]:
    """A profile's ``default-resources``/``set-threads`` (``nested``: ``set-resources``) as Snakemake turns it
    into command-line words: a list of them, or a mapping (``{rule: {key: value}}`` when nested)."""
    if isinstance(value, (str, int, float)):
        return [str(value)]
    if isinstance(value, list):
        return [str(entry) for entry in value if isinstance(entry, (str, int, float))]
    if not isinstance(value, dict):
        return []
    if not nested:
        return [f"{key}={item}" for key, item in value.items() if isinstance(item, (str, int, float))]
    return [f"{rule}:{key}={item}" for rule, inner in value.items() if isinstance(inner, dict)
            for key, item in inner.items() if isinstance(item, (str, int, float))]


def run_settings(argv: list[str], environ: dict, workflow_dir: Path, bases: list[Path],
                 merged: dict | None = None) -> dict:
    """The run's ``executor``, ``partition`` (``slurm_partition`` of the default resources; "" or None: the
    cluster's default) and whether the SLURM plugin picks partitions itself (``partition_config``); relative
    profile paths are looked for from ``bases`` (``merged``: the profiles, already read)."""
    merged = merged_profiles(argv, environ, workflow_dir, bases) if merged is None else merged
    profile = {key: value for key, (value, _) in merged.items()}
    executor = [v[0] for v in option_values(argv, ("--executor", "-e")) if v]
    partition_config = (option_values(argv, ("--slurm-partition-config",)) or profile.get("slurm-partition-config")
                        or environ.get("SNAKEMAKE_SLURM_PARTITIONS"))
    partition = default_settings(argv, merged).get("slurm_partition", Setting(None)).value
    return {"executor": executor[-1] if executor else profile.get("executor"),
            "partition": partition, "partition_config": bool(partition_config)}


@dataclass(frozen=True)
class Overrides:
    """What the command line and profiles set over the rules' own values: ``defaults`` (resource ->
    Setting), ``resources`` (rule -> resource -> Setting), ``threads`` (rule -> Setting) and ``max_threads``
    (``--max-threads``: every rule's threads at most this; Setting(None) when not given)."""

    defaults: dict
    resources: dict
    threads: dict
    max_threads: Setting = Setting(None)


def _given(argv: list[str], merged: dict, names: tuple[str, ...], key: str, nested: bool = False) -> list:
    """The words of the option ``names`` (its last occurrence on the command line, which replaces the profiles'
    ``key``; else the profiles'), each with the text that names it in a line: (word, origin)."""
    given = option_values(argv, names, many=True)
    if given:
        return [(word, f"{names[0]} {word}") for word in given[-1]]
    value, path = merged.get(key, (None, None))
    return [(entry, f"{key} {entry} in the profile {path}") for entry in _entries(value, nested)]


def default_settings(argv: list[str], merged: dict) -> dict:
    """The run's default resources (``--default-resources``, else the profiles'), those the check reads only:
    resource -> Setting; malformed entries are skipped."""
    defaults = {}
    for word, origin in _given(argv, merged, ("--default-resources", "--default-res"), "default-resources"):
        key, equals, text = word.partition("=")
        parsed = parse_resource(key.strip(), text) if equals else None
        if parsed:
            defaults[parsed[0]] = Setting(parsed[1], origin)
    return defaults


def run_overrides(argv: list[str], merged: dict) -> Overrides:
    """The run's default resources, ``--set-resources`` and ``--set-threads`` (command line, else profiles),
    the resources the check reads only; malformed entries are skipped."""
    resources, threads = {}, {}
    for word, origin in _given(argv, merged, ("--set-resources",), "set-resources", nested=True):
        match = re.fullmatch(r"\s*(\w+):\s*(\w+)\s*=(.*)", word, re.DOTALL)
        parsed = parse_resource(match[2], match[3]) if match else None
        if parsed:
            resources.setdefault(match[1], {})[parsed[0]] = Setting(parsed[1], origin)
    for word, origin in _given(argv, merged, ("--set-threads",), "set-threads"):
        match = re.fullmatch(r"\s*(\w+)\s*=(.*)", word, re.DOTALL)
        if match:
            count = _number(match[2].strip().strip("'\""))
            threads[match[1]] = Setting(count if isinstance(count, int) and count > 0 else None, origin)
    most = Setting(None)
    for word, origin in _given(argv, merged, ("--max-threads",), "max-threads")[-1:]:
        count = _number(word.strip().strip("'\""))
        most = Setting(count, origin) if isinstance(count, int) and count > 0 else most
    return Overrides(default_settings(argv, merged), resources, threads, most)


def stage_jobs(config: dict, stages: list[str], overrides: Overrides) -> list[Job]:
    """What the SLURM job of each of ``stages`` asks, as Snakemake sets it: the default resources, then the
    rule's own (the config's ``resources.<stage>``), then ``--set-resources`` (and ``--set-threads``)."""
    jobs = []
    for stage in stages:
        rule, entry = STAGE_RULES.get(stage, stage), config["resources"][stage]
        own = {"gpu": Setting(entry["gpus"]), "mem_mb": Setting(entry["mem_mb"]), "runtime": Setting(entry["runtime"])}
        res = {**overrides.defaults, **own, **overrides.resources.get(rule, {})}
        threads = overrides.threads.get(rule, Setting(entry["threads"]))
        most = overrides.max_threads
        if most.value is not None and threads.value is not None and threads.value > most.value:
            threads = most  # Snakemake lowers every rule's threads to --max-threads
        ask, origins = job_ask(res, threads)
        partition = res.get("slurm_partition", Setting(None))
        if "slurm_partition" in overrides.resources.get(rule, {}):
            origins["slurm_partition"] = partition.origin
        unread = tuple(s.origin for s in (*res.values(), threads) if s.value is None and s.origin)
        jobs.append(Job(stage, rule, ask, origins, partition.value, unread))
    return jobs


def _sinfo(*args: str) -> str:
    """``sinfo ARGS``'s output; OSError or CalledProcessError when it cannot be run."""
    return subprocess.run(["sinfo", *args], capture_output=True, text=True, check=True, timeout=60).stdout


def default_partition() -> str | None:
    """The cluster's default partition (the one ``sinfo`` marks with ``*``), or None."""
    names = _sinfo("-h", "-o", "%P").split()
    return next((name.rstrip("*") for name in names if name.endswith("*")), None)


def _with_partitions(jobs: list[Job], partition_config: bool) -> list[Job]:
    """``jobs`` with the cluster's default partition for those that name none; those the plugin places itself
    (``partition_config``) are left out, and so are all such when ``sinfo`` marks no default partition (said)."""
    named = [job for job in jobs if job.partition]
    if partition_config or len(named) == len(jobs):
        return named
    default = default_partition()
    if not default:
        _note("no partition given (slurm_partition) and sinfo marks no default partition")
        return named
    return [job if job.partition else replace(job, partition=default) for job in jobs]


def slurm_misfit(config: dict, workflow_dir: str | Path, argv: list[str], environ: dict) -> str | None:
    """When the run (command line ``argv``, environment ``environ``) submits to SLURM: the line saying which
    stage of ``config`` no node of its partition can hold (:func:`first_job_misfit`), else None. A check that
    cannot be made (no ``sinfo``, no default partition) prints why on stderr and lets the run go on."""
    if environ.get("R2L_SLURM_CHECK") == "0":
        return None
    # Snakemake has moved to the working directory (--directory): a relative --profile may be from where it started
    bases = [Path.cwd(), *([Path(environ["PWD"])] if environ.get("PWD") else []), Path(workflow_dir)]
    try:
        merged = merged_profiles(argv[1:], environ, Path(workflow_dir), bases)
    except (LookupError, OSError, yaml.YAMLError) as err:
        return _note(f"cannot read the run's profiles ({err})")
    settings = run_settings(argv[1:], environ, Path(workflow_dir), bases, merged)
    if settings["executor"] != "slurm":
        return None
    jobs = stage_jobs(config, submitted_stages(config), run_overrides(argv[1:], merged))
    unread = list(dict.fromkeys(origin for job in jobs for origin in job.unread))
    if unread:
        print(f"r2l: not checking what these set against the SLURM partition (values the check cannot read): "
              f"{'; '.join(unread)}", file=sys.stderr)
    nodes: dict[str, list[Node]] = {}
    try:
        jobs = _with_partitions(jobs, settings["partition_config"])
        for partition in dict.fromkeys(job.partition for job in jobs):
            nodes[partition] = parse_sinfo(_sinfo("-h", "-N", "-p", partition, "-o", SINFO_FORMAT))
    except (OSError, subprocess.SubprocessError, ValueError) as err:
        return _note(f"sinfo failed ({_reason(err)})")
    return first_job_misfit(jobs, nodes.__getitem__)


def _reason(err: Exception) -> str:
    """An error of running or reading ``sinfo`` in a few words."""
    if isinstance(err, subprocess.CalledProcessError):
        lines = (err.stderr or "").strip().splitlines()
        return lines[-1] if lines else f"exit status {err.returncode}"
    return "sinfo not found" if isinstance(err, FileNotFoundError) else str(err)


def _note(why: str) -> None:
    """Say on stderr that the jobs' resources were not checked against the partition, and why."""
    print(f"r2l: not checking the jobs' resources against a SLURM partition: {why}", file=sys.stderr)
