"""The ``r2l`` command (also ``python -m r2l``): run the pipeline, inspect and render trained models, benchmark.

- ``r2l run [snakemake args]``: the Snakemake pipeline of this checkout (``--snakefile`` added when not
  given, ``--cores 1`` when no ``--cores`` and ``--resources gpu=1`` when no ``--resources``); returns Snakemake's
  exit code.
- ``r2l info MODEL [--json]``: what a model file is (kind, student family, network, scene, step, val PSNR,
  training); for another file (a CSV, a training checkpoint, a pickle), what it is instead, in one line.
- ``r2l render MODEL --path orbit|spiral --out video.mp4`` or ``--pose FILE --out image.png``: renders any
  trained teacher or student with the scene camera stored in its file (or ``--scene DIR --format F``).
- ``r2l bench [--quick] [--json FILE] [--pipeline-benchmarks DIR]``: each stage's speed against the matmul peak.
- ``r2l export MODEL --out FILE.onnx [--fp16] [--json]``: a student as one ONNX graph (world-space rays in, colours
  out; :mod:`r2l.models.export`), checked against torch on a view of its stored camera.

A user error (an :class:`~r2l.core.errors.R2LError`, or bad arguments) is one line on stderr and exit code 1.
Heavy modules (torch and the package's models) are imported by the commands that need them, so ``--help``
and ``run`` start quickly.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import pickle
import subprocess
import sys
import tempfile
import textwrap
import warnings
import zipfile
from pathlib import Path

from r2l.core.errors import DataError, R2LError
from r2l.core.failures import failure_lines
from r2l.core.version import package_version

POSE_HELP = ("a 4x4 (or 3x4) camera-to-world matrix in the OpenGL convention (x right, y up, looking down -z; "
             "r2l.geometry.rays) in the scene's world frame (that of its poses), as .npy, .txt or .json")
PATH_KINDS = {False: "orbit", True: "spiral"}  # the camera path a scene stores: object-centric or forward-facing (ndc)
# what ``r2l info`` says of each student family (r2l.models.students.FAMILIES)
FAMILY_TEXT = {"r2l": "the paper's residual MLP", "grid": "grid-feature light field"}
CONFIG_SUFFIXES = (".yaml", ".yml", ".json")  # what r2l run takes as a --configfile
MAX_SIDE = 16_384  # the largest rendered image side (a 16384 x 16384 view's rays alone take ~6 GB)


class UsageError(R2LError):
    """Bad command-line arguments of the command ``prog`` (reported like every other user error)."""

    def __init__(self, message: str, prog: str = "r2l"):
        self.prog = prog
        super().__init__(message)


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are :class:`UsageError` (one line, exit code 1) instead of exit code 2."""

    def error(self, message: str):
        raise UsageError(f"{message} (see {self.prog} --help)", self.prog)


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def image_width(text: str) -> int:
    """An argparse type: an image width in pixels, 1 to MAX_SIDE."""
    value = positive_int(text)
    if value > MAX_SIDE:
        raise argparse.ArgumentTypeError(f"{value} pixels is too wide: at most {MAX_SIDE} per side")
    return value


def device_of(name: str):
    """``--device`` as a torch device; UsageError for a name torch does not know."""
    from r2l.core.runtime import pick_device

    try:
        return pick_device(name)
    except RuntimeError as err:
        raise UsageError(f"--device {name!r}: {str(err).splitlines()[0][:120]}") from err


def build_parser() -> Parser:
    """The ``r2l`` parser with its subcommands."""
    parser = Parser(prog="r2l", description="R2L neural light fields: the pipeline, trained models, benchmark.",
                    epilog="Run 'r2l COMMAND --help' for a command's options.")
    parser.add_argument("--version", action="version", version=f"r2l {package_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_run_parser(sub)
    add_info_parser(sub)
    add_render_parser(sub)
    add_bench_parser(sub)
    add_export_parser(sub)
    add_view_parser(sub)
    return parser


def add_command(sub, name: str, summary: str, description: str, examples: list[str]) -> Parser:
    """A subcommand parser with a wrapped description and an examples epilog."""
    return sub.add_parser(name, help=summary, description=textwrap.fill(description, 100),
                          epilog="examples:\n" + "\n".join(f"  {e}" for e in examples),
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def add_run_parser(sub) -> None:
    p = add_command(sub, "run", "run the pipeline (arguments go to Snakemake)", (
        "Run the r2l Snakemake pipeline: every argument is passed to Snakemake. Adds --snakefile (this "
        "checkout's Snakefile) when none is given, '--cores 1' when no --cores/-c is given and '--resources gpu=1' "
        "(one GPU job at a time) when no --resources is given."),
        ["r2l run -n                                dry run: list the jobs",
         "r2l run --configfile config/paper.yaml    the paper's settings",
         "r2l run -- --help                         Snakemake's own help"])
    p.add_argument("snakemake_args", nargs=argparse.REMAINDER, metavar="SNAKEMAKE_ARGS",
                   help="arguments for Snakemake (e.g. -n, --configfile FILE, --cores N, a target file)")


def add_info_parser(sub) -> None:
    p = add_command(sub, "info", "what a model file is", (
        "Describe a trained model file: kind (teacher nerf/grid, student, finetuned), a student's family (r2l or "
        "grid), network, scene identity and camera, step, validation PSNR, training time and device, precision."),
        ["r2l info results/builtin/finetuned/model.pt", "r2l info --json results/builtin/teacher/model.pt"])
    p.add_argument("model", type=Path, metavar="MODEL", help="a teacher, student or finetuned model file (.pt)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")


def add_render_parser(sub) -> None:
    p = add_command(sub, "render", "render a trained model (a video along a path, or one pose)", (
        "Render any trained teacher or student without Snakemake, with the scene camera stored in the model file "
        "(or --scene DIR --format F). --path renders the stored camera path (an orbit for object-centric scenes, a "
        "spiral for forward-facing ones) as a video; --pose renders one image."),
        ["r2l render results/builtin/finetuned/model.pt --path orbit --out orbit.mp4 --frames 60",
         "r2l render results/builtin/teacher/model.pt --pose pose.txt --out view.png --width 200"])
    p.add_argument("model", type=Path, metavar="MODEL", help="a teacher, student or finetuned model file (.pt)")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--path", choices=("orbit", "spiral"), help="render the stored camera path as a video")
    what.add_argument("--pose", type=Path, metavar="FILE", help=f"render one image at this pose: {POSE_HELP}")
    p.add_argument("--out", type=Path, required=True, help="output: .mp4 or .gif for --path, .png for --pose")
    p.add_argument("--width", type=image_width,
                   help=f"image width in pixels, at most {MAX_SIDE} (default the scene's; aspect kept)")
    p.add_argument("--frames", type=positive_int, help="--path: frames, evenly spread over the path (default all)")
    p.add_argument("--fps", type=positive_int, default=24, help="--path: frames per second (default 24)")
    p.add_argument("--scene", type=Path, metavar="DIR", help="take the camera from this scene folder instead")
    p.add_argument("--format", choices=("blender", "llff", "builtin", "photos"), help="the --scene folder's format")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1")


def add_bench_parser(sub) -> None:
    p = add_command(sub, "bench", "each stage's speed against the device's matmul peak", (
        "Measure the device's dense matmul peak, then student training (rays/s, FLOP/s as a fraction of the peak) "
        "and rendering (ms per 400x400 frame) for the default (12x128) and paper (88x256) networks and the default "
        "grid student (its feature lookups' FLOPs in closed form), the teachers' "
        "training and rendering (random weights, at the sizes of config/*.yaml) and the student's speed-up over "
        "each, and pseudo-data views per second, in one run; with --pipeline-benchmarks, each rule's time from "
        "Snakemake's benchmark files."),
        ["r2l bench --quick", "r2l bench --json bench.json", "r2l bench --quick --pipeline-benchmarks benchmarks"])
    p.add_argument("--quick", action="store_true", help="short measurements (about a minute on 2 CPU cores)")
    p.add_argument("--smoke", action="store_true", help="every measurement once at toy sizes (checks the bench runs)")
    p.add_argument("--pipeline-benchmarks", type=Path, metavar="DIR",
                   help="also report each rule's time from Snakemake's DIR/{scene}/{rule}.tsv files")
    p.add_argument("--pipeline-only", action="store_true", help="only read --pipeline-benchmarks (no measurements)")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the results as JSON")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1")
    p.add_argument("--threads", type=positive_int, help="CPU threads for torch (default torch's)")


# ----------------------------------------------------------------------------- run


def checkout_snakefile() -> Path | None:
    """The Snakefile of the checkout r2l is imported from, or None (an installed wheel has none)."""
    path = Path(__file__).resolve().parents[1] / "Snakefile"  # r2l/cli.py -> the checkout
    return path if path.is_file() else None


def has_option(args: list[str], *names: str) -> bool:
    """Whether ``args`` give one of the options ``names``: ``--long``, ``--long=V``, ``-s`` or ``-sV``."""
    def given(a: str, name: str) -> bool:
        if name.startswith("--"):
            return a == name or a.startswith(name + "=")
        return a.startswith(name) and not a.startswith("--")

    return any(given(a, name) for a in args for name in names)


def snakemake_command(args: list[str]) -> list[str]:
    """The Snakemake command line for ``r2l run ARGS`` (see the module docstring)."""
    args = list(args[1:] if args[:1] == ["--"] else args)
    if not has_option(args, "--snakefile", "-s"):
        snakefile = checkout_snakefile()
        if snakefile is None:
            raise R2LError("r2l is installed without its Snakefile (from a wheel?); pass --snakefile PATH/Snakefile "
                           "of an r2l checkout")
        args = ["--snakefile", str(snakefile), *args]
    if has_option(args, "--profile", "--workflow-profile"):  # a profile (e.g. profiles/slurm) sets jobs and resources
        return [sys.executable, "-m", "snakemake", *args]
    if not has_option(args, "--cores", "-c", "--jobs", "-j"):
        args += ["--cores", "1"]
    if not has_option(args, "--resources", "--res"):
        args += ["--resources", "gpu=1"]  # the rules that use the GPU ask for gpu=1: one at a time
    return [sys.executable, "-m", "snakemake", *args]


def configfiles(args: list[str]) -> list[str]:
    """The files given to ``--configfile``/``--configfiles`` (each option takes every word up to the next option)."""
    files, taking = [], False
    for word in args:
        if word.startswith("-"):
            taking = word in ("--configfile", "--configfiles") or word.startswith("--configfile=")
            if "=" in word and taking:
                files.append(word.split("=", 1)[1])
            continue
        if taking:
            files.append(word)
    return files


def check_configfiles(files: list[str]) -> None:
    """One line naming the file (and line) for a config file that is missing or not valid YAML."""
    import yaml  # noqa: PLC0415

    for name in files:
        path = Path(name)
        if not path.is_file() or path.suffix.lower() not in CONFIG_SUFFIXES:
            what = "config file not found" if not path.is_file() else "not a config file (.yaml, .yml or .json)"
            raise R2LError(f"{name}: {what}; --configfile takes every word after it up to the next option, so a "
                           "target placed there is read as a config file: put targets before --configfile")
        try:
            yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.MarkedYAMLError as err:
            mark = err.problem_mark
            where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            raise R2LError(f"{name}:{where}: not valid YAML ({err.problem})") from None
        except (yaml.YAMLError, UnicodeDecodeError) as err:
            raise R2LError(f"{name}: not valid YAML ({err})") from None


def cmd_run(args: list[str]) -> int:
    """Run Snakemake in a subprocess with this interpreter; returns its exit code."""
    if importlib.util.find_spec("snakemake") is None:
        raise R2LError(f"Snakemake is not installed for {sys.executable}; pip install 'snakemake>=9,<10'")
    check_configfiles(configfiles(args))
    code = subprocess.call(snakemake_command(args))
    if code != 0:  # the failed jobs' r2l lines once more, as the very last lines of the output
        workdir = run_directory(args)
        for line in failure_lines(newest_snakemake_log(workdir), workdir):
            print(line, file=sys.stderr)
    return code


def run_directory(args: list[str]) -> Path:
    """The working directory of ``snakemake ARGS`` (``--directory``/``-d``, else the current one)."""
    for i, word in enumerate(args):
        if word.startswith("--directory="):
            return Path(word.split("=", 1)[1])
        if word in ("--directory", "-d") and i + 1 < len(args):
            return Path(args[i + 1])
    return Path.cwd()


def newest_snakemake_log(workdir: Path) -> list[Path]:
    """The newest Snakemake log in ``workdir`` (a list of one, or empty when there is none)."""
    logs = sorted((workdir / ".snakemake" / "log").glob("*.snakemake.log"), key=lambda p: p.stat().st_mtime)
    return logs[-1:]


# ----------------------------------------------------------------------------- info


def _fmt(value, unit: str = "", digits: int = 2) -> str:
    """A recorded value with its unit, or "not recorded"."""
    if value is None:
        return "not recorded"
    return f"{value:.{digits}f}{unit}" if isinstance(value, float) else f"{value}{unit}"


def _scene_line(scene: dict | None) -> str:
    """The scene's identity and camera in one line."""
    if not scene:
        return "not recorded (an early student file, format 0)"
    if scene.get("H") is None:
        return f"{scene.get('name')} ({scene.get('format')} format), camera not recorded"
    space = "forward-facing, NDC" if scene.get("ndc") else "object-centric"
    if scene.get("unbounded"):
        space = "unbounded walk-around, contracted"
    n_poses = scene["render_poses"]
    path = f"{PATH_KINDS[bool(scene.get('ndc'))]} path of {n_poses} poses" if n_poses else "no camera path"
    return (f"{scene.get('name')} ({scene.get('format')} format), {scene['H']} x {scene['W']}, focal "
            f"{scene['focal']:.2f} px, ndc {'yes' if scene.get('ndc') else 'no'} ({space}; {path})")


def info_lines(d: dict) -> list[str]:
    """``r2l info``'s text: one ``name  value`` line per field."""
    role = f"teacher ({d['kind']})" if d["role"] == "teacher" else d["kind"]
    net = ", ".join(f"{k} {v}" for k, v in d["network"].items()) or "not recorded"
    family = d.get("family")  # None for a teacher
    cost = f"; {d['mflops_per_ray']:.2f} MFLOPs per ray" if d["mflops_per_ray"] is not None else ""
    if cost and family == "grid":
        cost += ", its feature lookups counted in closed form"
    family_row = [] if family is None else [("family", f"{family} ({FAMILY_TEXT.get(family, 'unknown family')})")]
    seconds = d["train_seconds"]
    training = "not recorded" if seconds is None else f"{seconds:.0f} s"
    if d["total_train_seconds"] is not None and d["total_train_seconds"] != seconds:
        training += f" (this stage; {d['total_train_seconds']:.0f} s with the stages before)"
    device = d["device"] if d["device_name"] in (None, d["device"]) else f"{d['device']} ({d['device_name']})"
    rows = [("model", d["file"]), ("kind", role), *family_row,
            ("network", f"{net} ({d['stored_values']:,} stored values{cost})"),
            ("scene", _scene_line(d["scene"])), ("step", _fmt(d["step"])), ("val PSNR", _fmt(d["val_psnr"], " dB")),
            ("training", training), ("device", _fmt(device)), ("precision", _fmt(d["precision"])),
            ("file size", f"{d['size_mb']:.2f} MB"), ("format", f"{d['format_version']} (model file layout)")]
    return [textwrap.fill(f"{name:<10} {value}", 110, subsequent_indent=" " * 11, break_on_hyphens=False)
            for name, value in rows]


# What a file that is not a torch file starts with (torch.save writes a zip, or a pickle in its legacy format).
FILE_MAGIC = {b"\x93NUMPY": "a NumPy .npy array", b"\x89PNG": "a PNG image", b"\xff\xd8\xff": "a JPEG image"}
TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"  # its pickled magic number
REFUSED_PICKLE = "a pickle that is not a plain torch.save of tensors (refused by weights_only loading)"
# a resume checkpoint's stage (its resume folder's name) -> the model file that stage writes when it ends
CHECKPOINT_MODELS = {"teacher": "teacher", "student": "student", "finetune": "finetuned"}


def sniff_file(path: Path) -> str | None:
    """What ``path`` is when its first bytes show it is no torch file (text, empty, an image, a plain pickle), in
    words; None when it may be one (torch then reads it)."""
    if not path.is_file():
        return None
    with path.open("rb") as f:
        head = f.read(4096)
    if not head:
        return "an empty file, not a model file"
    what = next((text for magic, text in FILE_MAGIC.items() if head.startswith(magic)), None)
    if what is not None:
        return f"not a torch file ({what})"
    if head[:1] == b"\x80" and not head.startswith(TORCH_LEGACY_MAGIC):
        return REFUSED_PICKLE  # a pickle.dump, not a torch.save
    if head.startswith(b"PK\x03\x04"):
        return zip_text(path)
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as err:
        if err.start < len(head) - 3:  # (not just a character cut at the end of the 4 KB read)
            return None
    return None if b"\0" in head else "not a torch file (a CSV/text file?)"


def zip_text(path: Path) -> str | None:
    """``path`` (a zip archive) in words when it is no torch file (which holds ``*/data.pkl``), else None."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return None  # damaged: torch's message says more
    if any(name.endswith("/data.pkl") for name in names):
        return None
    npz = names and all(name.endswith(".npy") for name in names)
    return f"not a torch file (a zip archive{': a NumPy .npz' if npz else ''})"


def checkpoint_facts(path: Path, ckpt: dict) -> tuple[str, str, object] | None:
    """``(resume folder, what it trains in words, step)`` of a teacher's or student's training checkpoint: format
    3's layout (:data:`r2l.core.checkpoint.CHECKPOINT_KEYS`: ``stage``, ``kind``, ``step``) or a stage's layout
    of formats 1 and 2 (a teacher's ``model`` and ``step``; a student's ``weights`` and ``loop``, finetuning when
    it continues a student or lies in a ``finetune`` folder); else None."""
    config = ckpt.get("config") if isinstance(ckpt.get("config"), dict) else {}
    loop = ckpt.get("loop") if isinstance(ckpt.get("loop"), dict) else {}
    stage, kind = ckpt.get("stage"), ckpt.get("kind")
    if {"stage", "kind", "weights", "optimizer", "rng", "loop"} <= ckpt.keys() and stage in ("teacher", "student"):
        if stage == "teacher":
            return "teacher", f"a {kind} teacher", ckpt.get("step")
        finetune = kind == "finetuned"
    elif {"model", "optimizer", "rng"} <= ckpt.keys() and config.get("kind") in ("nerf", "grid"):
        return "teacher", f"a {config['kind']} teacher", ckpt.get("step")
    elif {"weights", "optimizer", "rng", "loop"} <= ckpt.keys():
        finetune = path.parent.name == "finetune" or (loop.get("base_step") or 0) > 0
    else:
        return None
    step = ckpt.get("step", loop.get("step"))
    return ("finetune", "a student's finetuning", step) if finetune else ("student", "a student's distillation", step)


def checkpoint_text(path: Path, ckpt: dict) -> str | None:
    """``ckpt`` (from ``path``) in words when it is a teacher's or student's resume checkpoint (stage, step, format:
    :func:`checkpoint_facts`), else None."""
    facts = checkpoint_facts(path, ckpt)
    if facts is None:
        return None
    stage, what, step = facts
    in_resume = path.parent.name in CHECKPOINT_MODELS and path.parent.parent.parent.name == "resume"
    scene = path.parent.parent.name if in_resume else "{scene}"  # resources/resume/{scene}/{stage}/ckpt_*.pt
    at = "" if step is None else f" at step {step}"
    version = ckpt.get("format_version", 1)
    return (f"a training checkpoint (resume point, format {version}) of {what}{at}, not a model file; the model is "
            f"results/{scene}/{CHECKPOINT_MODELS[stage]}/model.pt (written when the training ends)")


def torch_file_text(path: Path) -> str | None:
    """What a torch file that is no r2l model file holds, in words; None when it cannot be told (or is a model)."""
    import torch

    try:
        with warnings.catch_warnings():  # torch warns of pickle protocols it does not write
            warnings.filterwarnings("ignore", "Detected pickle protocol", UserWarning)
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        with path.open("rb") as f:  # a pickle (torch's zip holds one) that holds more than tensors, or no pickle
            return REFUSED_PICKLE if f.read(4) in (b"PK\x03\x04", TORCH_LEGACY_MAGIC[:4]) else None
    except (RuntimeError, OSError, EOFError, ValueError, IndexError, KeyError):
        return None  # damaged: the loader's own message stands
    if not isinstance(obj, dict):
        return f"a torch file holding a {type(obj).__name__}, not an r2l model file"
    described = checkpoint_text(path, obj)  # (a checkpoint records the kind of model it trains)
    if described is not None or obj.get("kind") in ("nerf", "grid", "student", "finetuned"):
        return described
    keys = ", ".join(sorted(map(str, obj))[:6]) + (", ..." if len(obj) > 6 else "")
    return f"a torch file holding a dict ({keys}) that is not an r2l model file"


def read_model(path: Path, read):
    """``read(path)`` (describe_model or load_model); DataError saying what the file is when it is not a model."""
    problem = sniff_file(path)
    if problem is not None:
        raise DataError(path, problem)
    try:
        return read(path)
    except DataError as err:
        better = torch_file_text(path) if err.path == path and path.is_file() else None
        if better is None:
            raise
        raise DataError(path, better) from err


def status_note(text: str):
    """Show ``text`` on stderr while something slow runs, when stderr is a terminal; returns what erases it."""
    if not sys.stderr.isatty():
        return lambda: None
    print(text, end="", file=sys.stderr, flush=True)
    return lambda: print("\r\033[K", end="", file=sys.stderr, flush=True)


def describe_file(path: Path) -> dict:
    """``describe_model(path)``, importing torch (seconds) only now, once ``sniff_file`` has let the file through;
    on a terminal a note says so meanwhile."""
    erase = status_note(f"r2l info: reading {path} (loading torch) ...")
    try:
        from r2l.models.load import describe_model

        return describe_model(path)
    finally:
        erase()


def cmd_info(args: argparse.Namespace) -> int:
    """Print what ``args.model`` is, as text or JSON."""
    d = read_model(args.model, describe_file)
    print(json.dumps(d, indent=2) if args.json else "\n".join(info_lines(d)))
    return 0


# ----------------------------------------------------------------------------- render


def read_pose(path: Path):
    """A camera-to-world pose file (.npy, .txt or .json; 4x4 or 3x4) as a (4, 4) float32 array; DataError else."""
    import numpy as np

    if not path.is_file():
        raise DataError(path, "pose file not found")
    try:
        if path.suffix == ".npy":
            pose = np.load(path, allow_pickle=False)
        elif path.suffix == ".json":
            pose = json.loads(path.read_text())
        elif path.suffix == ".txt":
            pose = np.loadtxt(path, ndmin=2)
        else:
            raise DataError(path, "a pose file must be .npy, .txt or .json")
        pose = np.asarray(pose, dtype=np.float64)
    except (ValueError, TypeError, OSError) as err:
        raise DataError(path, f"unreadable pose file ({str(err).splitlines()[0][:120]})") from err
    return check_pose(path, pose)


def check_pose(path: Path, pose):
    """``pose`` as a (4, 4) float32 camera-to-world matrix; DataError naming ``path`` when it is not one."""
    import numpy as np

    if pose.shape not in ((4, 4), (3, 4)):
        raise DataError(path, f"a pose must be a 4x4 or 3x4 camera-to-world matrix, got shape {pose.shape}")
    if not np.isfinite(pose).all():
        raise DataError(path, "the pose has non-finite values")
    if pose.shape == (3, 4):
        pose = np.concatenate([pose, [[0.0, 0.0, 0.0, 1.0]]])
    if not np.allclose(pose[3], [0.0, 0.0, 0.0, 1.0], atol=1e-6):
        raise DataError(path, f"the last row of a 4x4 pose must be 0 0 0 1, got {pose[3].tolist()}")
    R = pose[:3, :3]
    if not np.allclose(R.T @ R, np.eye(3), atol=1e-3) or np.linalg.det(R) < 0:
        raise DataError(path, "the pose's 3x3 rotation part is not a rotation (orthonormal, determinant +1)")
    return pose.astype(np.float32)


def scene_from_camera(camera: dict, default_name: str):
    """A :class:`~r2l.data.scene.Scene` without images from a model file's stored camera (rays and paths only)."""
    import numpy as np

    from r2l.data.scene import Scene

    H, W = int(camera["H"]), int(camera["W"])
    poses = camera.get("render_poses") or []
    return Scene(
        name=camera.get("name") or default_name, format=camera.get("format") or "unknown",
        images=np.zeros((0, H, W, 3), np.float32), poses=np.zeros((0, 4, 4), np.float32), H=H, W=W,
        focal=float(camera["focal"]), near=float(camera.get("near", 0.0)), far=float(camera.get("far", 1.0)),
        splits={}, background=tuple(camera.get("background", (1.0, 1.0, 1.0))), ndc=bool(camera["ndc"]),
        ndc_near=float(camera.get("ndc_near", 1.0)),
        render_poses=np.asarray(poses, dtype=np.float32).reshape(-1, 4, 4) if poses else None,
    )


def render_scene(args: argparse.Namespace, model):
    """The scene whose camera renders ``model``: ``--scene DIR --format F``, else the one stored in the file."""
    from r2l.models.load import model_camera

    if args.scene is not None:
        if args.format is None:
            raise UsageError("--scene needs --format (blender, llff, builtin or photos)", "r2l render")
        from r2l.data.registry import load_scene

        scene = load_scene(args.format, args.scene)
    else:
        camera = model_camera(model)
        if camera is None:
            raise DataError(args.model, "the file stores no scene camera (an early file, format 0): retrain it, or "
                                        "pass --scene DIR --format blender|llff")
        scene = scene_from_camera(camera, args.model.stem)
    from r2l.models.teacher import Teacher

    model_ndc = bool(model.info["ndc"] if isinstance(model, Teacher) else model.meta["ndc"])
    if scene.ndc != model_ndc:
        raise DataError(args.scene or args.model, f"the scene is {'' if scene.ndc else 'not '}forward-facing (ndc) "
                                                  f"but the model was trained {'with' if model_ndc else 'without'} ndc")
    return scene


def size_at_width(scene, width: int | None) -> tuple[int, int]:
    """``(H, W)`` of a view ``width`` pixels wide (default the scene's), the scene's aspect kept; UsageError when a
    side is over MAX_SIDE."""
    W = scene.W if width is None else int(width)
    H = max(1, round(W * scene.H / scene.W))
    if max(H, W) > MAX_SIDE:
        raise UsageError(f"a {W} x {H} image is too large: at most {MAX_SIDE} pixels per side; pass a smaller "
                         "--width", "r2l render")
    return H, W


def path_poses(args: argparse.Namespace, scene):
    """The stored camera path (``(n, 4, 4)``), checked against ``--path`` and thinned to ``--frames``."""
    import numpy as np

    has = PATH_KINDS[scene.ndc]
    if args.path != has:
        kind = "forward-facing (ndc)" if scene.ndc else "object-centric"
        article = "an" if has == "orbit" else "a"
        raise R2LError(f"{args.scene or args.model}: scene {scene.name!r} is {kind} and has {article} {has} path, "
                       f"not {args.path}; use --path {has}")
    poses = scene.render_poses
    if poses is None or len(poses) == 0:
        raise R2LError(f"{args.scene or args.model}: scene {scene.name!r} stores no camera path")
    if args.frames is not None and args.frames > len(poses):
        raise UsageError(f"--frames {args.frames} is more than the {len(poses)} poses of the stored path", "r2l render")
    n = len(poses) if args.frames is None else args.frames
    return np.asarray(poses)[np.linspace(0, len(poses) - 1, n).round().astype(int)]


def check_out(args: argparse.Namespace) -> None:
    """``--out`` must be an image for ``--pose`` and a video for ``--path``."""
    wanted = (".mp4", ".gif") if args.path else (".png",)
    if args.out.suffix.lower() not in wanted:
        raise UsageError(f"--out {args.out} must end in {' or '.join(wanted)}", "r2l render")
    if args.out.is_dir():
        raise UsageError(f"--out {args.out} is a folder", "r2l render")
    check_writable(args.out)


def check_writable(out: Path) -> None:
    """UsageError unless a file can be written in ``out``'s folder (or in the nearest folder above it that exists,
    where the missing ones will be made); leaves nothing behind."""
    folder = out.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise UsageError(f"--out {out}: {folder} is a file, not a folder", "r2l render")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise UsageError(f"--out {out}: cannot write in {folder} ({err.strerror or type(err).__name__})",
                         "r2l render") from None


def cmd_render(args: argparse.Namespace) -> int:
    """Render an image at ``--pose`` or a video along ``--path``; prints the file written."""
    from r2l.core.imageio import save_png
    from r2l.models.load import load_model
    from r2l.report.figures import render_video

    check_out(args)
    pose = read_pose(args.pose) if args.pose is not None else None
    device = device_of(args.device)
    model = read_model(args.model, lambda path: load_model(path, device))
    scene = render_scene(args, model)
    H, W = size_at_width(scene, args.width)
    poses = path_poses(args, scene) if pose is None else None
    try:
        if pose is not None:
            rays_o, rays_d = scene.rays(pose, H, W, scene.focal * W / scene.W)
            save_png(model.render_rays(rays_o, rays_d).reshape(H, W, 3).numpy(), args.out)
            written = args.out
        else:
            written = render_video(model, scene, poses, args.out, fps=args.fps, H=H, W=W)
    except OSError as err:  # the folder went away, the disk is full, ...
        raise R2LError(f"--out {args.out}: cannot write it ({err.strerror or err})") from err
    print(f"wrote {written} ({W} x {H})")
    return 0


# ----------------------------------------------------------------------------- bench


def cmd_bench(args: argparse.Namespace) -> int:
    """Run the benchmark, print its table and write its JSON when asked."""
    from r2l.bench import format_pipeline, format_table, pipeline_times, run_bench
    from r2l.core.atomic import atomic_write_text

    if args.pipeline_benchmarks is not None and not args.pipeline_benchmarks.is_dir():
        raise R2LError(f"{args.pipeline_benchmarks}: no such folder (Snakemake writes benchmarks/{{scene}}/*.tsv)")
    if args.pipeline_only:
        if args.pipeline_benchmarks is None:
            raise UsageError("--pipeline-only reads --pipeline-benchmarks DIR: give that folder too")
        results = {"pipeline": pipeline_times(args.pipeline_benchmarks)}
        print(format_pipeline(results["pipeline"]))
    else:
        results = run_bench(str(device_of(args.device)), args.quick, args.threads, smoke=args.smoke,
                            pipeline_dir=args.pipeline_benchmarks)
        print(format_table(results))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.json, json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


# ----------------------------------------------------------------------------- export


def add_export_parser(sub) -> None:
    p = add_command(sub, "export", "a student as one ONNX graph (rays in, colours out)", (
        "Export a trained student (r2l or grid family) to ONNX: the graph takes world-space ray origins and "
        "directions (n_rays, 3) float32 each, as a camera casts them (OpenGL camera-to-world), and returns colours "
        "(n_rays, 3); the NDC map of a forward-facing scene, the points along each ray and the network are inside "
        "it, and the scene camera is in its metadata. Then renders one view of the stored camera through "
        "onnxruntime and torch on the CPU and prints the largest colour difference, the file size and both "
        "runtimes' ms per frame."),
        ["r2l export results/builtin/finetuned/model.pt --out builtin.onnx",
         "r2l export results/builtin/finetuned/model.pt --out builtin16.onnx --fp16 --json"])
    p.add_argument("model", type=Path, metavar="MODEL", help="a student or finetuned model file (.pt)")
    p.add_argument("--out", type=Path, required=True, help="the ONNX file to write (.onnx)")
    p.add_argument("--fp16", action="store_true",
                   help="store the weights as float16 (half the file; the arithmetic stays float32)")
    p.add_argument("--threads", type=positive_int, help="CPU threads of both runtimes in the check (default torch's)")
    p.add_argument("--json", action="store_true", help="print the export's numbers as JSON instead of text")


def cmd_export(args: argparse.Namespace) -> int:
    """Export ``args.model`` to ``args.out`` and print how it compares with torch (text or JSON)."""
    from r2l.models.export import require
    from r2l.models.export_check import check_line, export_and_check
    from r2l.models.load import load_model

    if args.out.suffix.lower() != ".onnx" or args.out.is_dir():
        raise UsageError(f"--out {args.out} must be a file ending in .onnx", "r2l export")
    require("onnx", "onnxscript", "onnxruntime")
    try:
        check_writable(args.out)
    except UsageError as err:
        raise UsageError(str(err), "r2l export") from None
    read_model(args.model, lambda path: load_model(path, "cpu", precision="fp32"))  # a bad file: one line
    check = export_and_check(args.model, args.out, args.fp16, args.threads)
    written, family = check["file"], check["family"]
    if args.json:
        print(json.dumps(check, indent=2))
    else:
        weights = "float16" if args.fp16 else "float32"
        print(f"wrote {written} ({family} student, opset {check['opset']}, {weights} weights; "
              f"rays_o, rays_d (n_rays, 3) world-space in, rgb (n_rays, 3) out)")
        print(check_line(check))
    return 0


# ----------------------------------------------------------------------------- view


def add_view_parser(sub) -> None:
    p = add_command(sub, "view", "serve a scene's viewer on 127.0.0.1", (
        "Serve the static viewer of a scene (results/{scene}/viewer/: the exported student, rendered in the "
        "browser with onnxruntime-web; no compute on the server) on 127.0.0.1 and print its URL; serves until "
        "Ctrl-C. Any static file server serves the folder too (then onnxruntime-web runs on one thread)."),
        ["r2l view results/builtin", "r2l view builtin --port 8000", "r2l view results/builtin/viewer"])
    p.add_argument("where", type=Path, metavar="RESULTS_DIR_OR_SCENE",
                   help="a results/{scene} folder, a viewer folder, or a scene name (results/NAME/viewer)")
    p.add_argument("--port", type=int, default=0, help="the port (default a free one)")


def cmd_view(args: argparse.Namespace) -> int:
    """Serve the viewer ``args.where`` names on 127.0.0.1 until interrupted (Ctrl-C: exit status 0)."""
    import threading

    from r2l.report.viewer import serve, viewer_folder

    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port {args.port}: a port is 0 (any free one) to 65535", "r2l view")
    folder = viewer_folder(args.where)
    try:
        server, url = serve(folder, args.port)
    except OSError as err:
        raise R2LError(f"cannot serve on 127.0.0.1:{args.port} ({err.strerror or err})") from None
    print(f"serving {folder} at {url} (Ctrl-C to stop)", flush=True)
    try:
        stop = threading.Event()
        while not stop.wait(0.5):  # wakes to run Python's signal handler when Ctrl-C reached another thread
            pass
    except KeyboardInterrupt:
        print("stopped", flush=True)
    finally:
        server.shutdown()
        server.server_close()
    return 0


# ----------------------------------------------------------------------------- main


COMMANDS = {"info": cmd_info, "render": cmd_render, "bench": cmd_bench, "export": cmd_export, "view": cmd_view}


def dispatch(argv: list[str]) -> int:
    """Parse ``argv`` and run its command (``run`` passes its arguments through unparsed)."""
    if argv[:1] == ["run"] and not {"-h", "--help"} & set(argv[1 : (argv + ["--"]).index("--", 1)]):
        return cmd_run(argv[1:])
    args = build_parser().parse_args(argv)
    if args.command == "run":  # reached only for --help, which argparse answers itself
        return cmd_run(args.snakemake_args)
    from r2l.core.log import setup_logging

    setup_logging()
    return COMMANDS[args.command](args)


def main(argv: list[str] | None = None) -> int:
    """The ``r2l`` entry point: returns the exit code (1 and one line on stderr for a user error)."""
    try:
        return dispatch(list(sys.argv[1:] if argv is None else argv))
    except R2LError as err:
        print(f"{getattr(err, 'prog', 'r2l')}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("r2l: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
