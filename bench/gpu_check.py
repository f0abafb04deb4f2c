"""The GPU check (issue 12, §4): from a fresh checkout on one GPU, in at most 8 minutes, every step in turn:

1. install: keeps the machine's torch (a CUDA build) when there is one and installs r2l without dependencies
   (``pip install --no-deps --no-build-isolation -e .``), then only the packages the check needs that are
   missing, from ``--wheels DIR`` when given (a machine without a registry); without torch it installs
   ``torch`` (the default index's CUDA build) and then ``pip install -c constraints.txt -e '.[test]'`` with
   the CPU torch pin of constraints.txt left out. Subprocesses also get this checkout on ``PYTHONPATH``, so a
   failed editable install costs nothing.
2. tests: ``pytest -m cuda tests/test_cuda.py`` (CPU-GPU loss agreement, bf16 against fp32 renders, resume).
3. bench: ``python -m r2l bench --quick --json`` on the GPU.
4. paper run: ``bench/paper_run.py`` on the lego folder given by ``--data`` (400x400, paper preset, a fixed
   number of steps per stage and a time budget), printing test PSNR against wall time per stage.

    python bench/gpu_check.py --data runs/lego_400 --out "$OUT"        # on the GPU machine
    python bench/gpu_check.py --prepare-data ../shared/data/nerf_synthetic/lego_400 runs/lego_400
    python bench/gpu_check.py --dry-run --out /tmp/gpu_check            # every step on the CPU, toy sizes

The lego data does not travel with the checkout: copy it into an ignored folder of the repository first
(``--prepare-data SRC DST`` copies the train views and the first ``--views`` val and test views, rewriting
their transforms files; ``runs/`` is ignored) and carry that folder (about 14 MB with 8 val and test views).
``--dry-run`` (or ``--cpu``) runs every step on the CPU at toy
sizes: the install step only reports what it would install, the tests run with ``R2L_CUDA_TEST_DEVICE=cpu``
(the CPU against itself), the bench runs ``--smoke`` and the paper run ``--tiny``. Every step has a time
limit within ``--budget`` seconds; a step that fails or runs out of time does not stop the later ones.

Written under ``--out`` (default ``$OUT``, else runs/gpu_check), at most 5 files: ``check.log`` (every step's
output), ``bench.json``, ``paper_run.json``, ``gpu_check.json`` (each step's exit code and seconds, the
machine, and the §2 GPU targets met or missed) and nothing else; models and stores go to ``--work``.
This script imports only the standard library, so it runs before anything is installed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# import name -> pip name: what the check itself needs (r2l's runtime imports, pytest for the tests)
NEEDED = {"numpy": "numpy", "yaml": "pyyaml", "imageio": "imageio", "pandas": "pandas", "matplotlib": "matplotlib",
          "tqdm": "tqdm", "pytest": "pytest"}
# the time each step may take at most (s), before the budget shares out what is left
STEP_LIMITS = {"install": 120, "tests": 150, "bench": 180, "paper_run": 330}
# the §2 GPU targets the bench measures: (what, JSON section, network or teacher, key, comparison, value)
TARGETS = (
    ("student training step >= 50% of bf16 peak", "student_training", "paper 88x256", "fraction_of_peak", ">=", 0.5),
    ("student loop >= 50% of bf16 peak", "student_loop", "paper 88x256", "fraction_of_peak", ">=", 0.5),
    ("student render <= 5 ms per 400x400 frame", "student_render", "paper 88x256", "ms_per_frame", "<=", 5.0),
    ("student render >= 50% of bf16 peak", "student_render", "paper 88x256", "fraction_of_peak", ">=", 0.5),
    ("pseudo-data >= 20 views/s (grid teacher)", "pseudo_data", "grid lego_fast.yaml", "views_per_s", ">=", 20.0),
)


class Check:
    """The run: its output folder, log, deadline and each step's result."""

    def __init__(self, args: argparse.Namespace):
        self.args, self.out, self.start = args, args.out, time.monotonic()
        self.out.mkdir(parents=True, exist_ok=True)
        self.log = self.out / "check.log"
        self.log.write_text("")
        self.steps: dict[str, dict] = {}
        path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        self.env = {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}
        if args.dry_run:
            self.env["R2L_CUDA_TEST_DEVICE"] = "cpu"

    def left(self) -> float:
        return self.args.budget - (time.monotonic() - self.start)

    def say(self, text: str) -> None:
        print(text, flush=True)
        with open(self.log, "a") as f:
            f.write(text + "\n")

    def run(self, step: str, cmd: list[str], reserve: float = 0.0) -> int:
        """Run ``cmd`` in the checkout with a time limit (its own limit, within what the budget leaves after
        ``reserve`` seconds for later steps); its output goes to the log and to stdout. Returns the exit code
        (124 when it ran out of time)."""
        limit = max(10.0, min(STEP_LIMITS[step], self.left() - reserve))
        self.say(f"\n===== {step}: {' '.join(cmd)}  (limit {limit:.0f} s)")
        t0, mark = time.monotonic(), self.log.stat().st_size
        with open(self.log, "a") as f:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=f, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            try:
                rc = proc.wait(timeout=limit)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)  # the step's own process group
                proc.wait()
                rc = 124
        with open(self.log) as f:
            f.seek(mark)
            sys.stdout.write(f.read())
        seconds = time.monotonic() - t0
        self.steps.setdefault(step, {"rc": 0, "seconds": 0.0})
        self.steps[step]["rc"] = self.steps[step]["rc"] or rc
        self.steps[step]["seconds"] += seconds
        self.say(f"===== {step}: exit code {rc}{' (out of time)' if rc == 124 else ''}, {seconds:.1f} s")
        return rc


def python_probe(check: Check, code: str) -> str:
    """Output of ``python -c code`` in the check's environment ('' when it fails)."""
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=check.env, capture_output=True, text=True,
                            timeout=120, check=False)
    return result.stdout.strip() if result.returncode == 0 else ""


def missing_modules(check: Check) -> list[str]:
    """The pip names of the modules in :data:`NEEDED` that do not import."""
    code = f"import importlib.util as u; print(' '.join(m for m in {list(NEEDED)!r} if u.find_spec(m) is None))"
    return [NEEDED[m] for m in python_probe(check, code).split()]


def constraints_without_torch() -> Path:
    """constraints.txt without its torch pin (the CPU wheel), as a temporary file."""
    lines = [ln for ln in (ROOT / "constraints.txt").read_text().splitlines() if not ln.strip().startswith("torch")]
    path = Path(tempfile.mkstemp(suffix=".txt", prefix="constraints_")[1])
    path.write_text("\n".join(lines) + "\n")
    return path


def pip(*args: str) -> list[str]:
    return [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", *args]


def step_install(check: Check) -> None:
    """Keep an existing torch; install r2l without dependencies and then only what is missing (see the doc)."""
    torch_info = python_probe(check, "import torch; print(torch.__version__, torch.version.cuda, "
                                     "torch.cuda.is_available())")
    check.say(f"\n===== install: python {sys.executable}; torch: {torch_info or 'not installed'}")
    wheels = ["--no-index", "--find-links", str(check.args.wheels)] if check.args.wheels else []
    if check.args.dry_run:
        missing = missing_modules(check)
        check.say(f"dry run: would run {' '.join(pip('--no-deps', '--no-build-isolation', '-e', '.'))}; "
                  f"missing: {', '.join(missing) or 'nothing'}")
        check.steps["install"] = {"rc": 0, "seconds": 0.0, "torch": torch_info, "missing": missing}
        return
    constraints = str(constraints_without_torch())
    if not torch_info:
        check.run("install", pip(*wheels, "torch"), reserve=300)
        check.run("install", pip(*wheels, "-c", constraints, "-e", ".[test]"), reserve=300)
    else:
        check.run("install", pip("--no-deps", "--no-build-isolation", "-e", "."), reserve=300)
        missing = missing_modules(check)
        if missing:
            check.run("install", pip(*wheels, "-c", constraints, *missing), reserve=300)
    # what counts is that the check can run: torch, r2l (installed, or this checkout on PYTHONPATH) and NEEDED
    ready = python_probe(check, "import torch, r2l; print(torch.__version__, torch.cuda.is_available())")
    missing = missing_modules(check)
    rc = 0 if ready and not missing else 1
    check.say(f"install: {'ready' if rc == 0 else 'NOT ready'}: torch and CUDA {ready or 'do not import'}; "
              f"missing: {', '.join(missing) or 'nothing'} (a failed pip call above is harmless when ready)")
    check.steps["install"] = {**check.steps.get("install", {"seconds": 0.0}), "rc": rc, "torch": ready,
                              "missing": missing}


def step_tests(check: Check) -> None:
    check.run("tests", [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", "-rs",
                        "tests/test_cuda.py"], reserve=240)


def step_bench(check: Check) -> None:
    args = check.args
    mode = ["--smoke", "--device", "cpu", "--threads", "1"] if args.dry_run else ["--quick"]
    check.run("bench", [sys.executable, "-m", "r2l", "bench", *mode, "--json", str(args.out / "bench.json")],
              reserve=120)


def step_paper_run(check: Check) -> None:
    args = check.args
    cmd = [sys.executable, "bench/paper_run.py", "--out", str(args.out), "--work", str(args.work)]
    if args.dry_run:
        cmd += ["--tiny", "--device", "cpu"]
    elif args.data is None:
        check.say("\n===== paper_run: skipped, no --data (a lego folder; see --prepare-data)")
        check.steps["paper_run"] = {"rc": 1, "seconds": 0.0, "skipped": "no --data"}
        return
    else:
        stage_seconds = max(20.0, (min(STEP_LIMITS["paper_run"], check.left()) - 90.0) / 3.0)
        cmd += ["--data", str(args.data), "--stage-seconds", f"{stage_seconds:.0f}", *args.paper_args]
    check.run("paper_run", cmd)


def targets(bench: dict) -> list[dict]:
    """The §2 GPU targets :data:`TARGETS` against a bench's results, at the best precision measured."""
    out = []
    for what, section, name, key, op, value in TARGETS:
        rows = [r for r in bench.get(section, []) if name in (r.get("network"), r.get("teacher"))]
        got = [r[key] for r in rows if r.get(key) is not None]
        if not got:
            out.append({"target": what, "measured": None, "met": None})
            continue
        best = max(got) if op == ">=" else min(got)
        out.append({"target": what, "measured": best, "met": best >= value if op == ">=" else best <= value})
    return out


def summary(check: Check) -> dict:
    """What gpu_check.json holds: the steps, the machine, the targets and the paper run's points."""
    bench = json.loads((check.out / "bench.json").read_text()) if (check.out / "bench.json").is_file() else {}
    paper = json.loads((check.out / "paper_run.json").read_text()) if (check.out / "paper_run.json").is_file() else {}
    return {"dry_run": check.args.dry_run, "date": time.strftime("%Y-%m-%d %H:%M:%S"), "steps": check.steps,
            "device_name": bench.get("device_name"), "peak_flops_per_s": bench.get("peak_flops_per_s"),
            "targets": targets(bench) if not check.args.dry_run else [],
            "paper_run": {k: paper.get(k) for k in ("teacher", "pseudo", "student", "total_seconds")},
            "total_seconds": time.monotonic() - check.start}


def print_summary(check: Check, s: dict) -> None:
    check.say("\n===== summary")
    for name, step in s["steps"].items():
        check.say(f"{name:<10} exit {step['rc']:>3}  {step['seconds']:7.1f} s")
    for t in s["targets"]:
        verdict = "not measured" if t["met"] is None else ("met" if t["met"] else "MISSED")
        check.say(f"target: {t['target']}: {verdict} (measured {t['measured']})")
    for stage in ("teacher", "student"):
        for p in s["paper_run"].get(stage) or []:
            check.say(f"paper run {stage:<8} step {p['step']:>7,} {p['seconds']:8.1f} s  "
                      f"test PSNR {p['test_psnr']:.2f} dB")
    pseudo = s["paper_run"].get("pseudo")
    if pseudo:
        check.say(f"paper run pseudo: {pseudo['views']} views in {pseudo['seconds']:.1f} s "
                  f"({pseudo['views_per_s']:.2f}/s)")
    check.say(f"total {s['total_seconds']:.1f} s")


def prepare_data(src: Path, dst: Path, views: int) -> None:
    """Copy a Blender scene: every train view and the first ``views`` val and test views (transforms rewritten)."""
    for split in ("train", "val", "test"):
        meta = json.loads((src / f"transforms_{split}.json").read_text())
        if split != "train":
            meta["frames"] = meta["frames"][:views]
        for frame in meta["frames"]:
            rel = frame["file_path"] + ("" if frame["file_path"].endswith(".png") else ".png")
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / rel, dst / rel)
        (dst / f"transforms_{split}.json").write_text(json.dumps(meta, indent=2))
    print(f"copied {src} to {dst} (val and test: {views} views each)")


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or ROOT / "runs" / "gpu_check"))
    ap.add_argument("--data", type=Path, help="the lego scene folder (400x400) for the paper run")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "r2l_gpu_check",
                    help="models and stores of the paper run")
    ap.add_argument("--budget", type=float, default=480.0, help="seconds for the whole check (default 8 min)")
    ap.add_argument("--wheels", type=Path, help="a folder of wheels for missing packages (no registry needed)")
    ap.add_argument("--dry-run", "--cpu", dest="dry_run", action="store_true", help="every step on the CPU, toy sizes")
    ap.add_argument("--skip", default="", help="comma-separated steps to skip: install,tests,bench,paper_run")
    ap.add_argument("--prepare-data", nargs=2, type=Path, metavar=("SRC", "DST"), help="copy a lego folder, then exit")
    ap.add_argument("--views", type=int, default=8, help="--prepare-data: val and test views kept")
    ap.add_argument("paper_args", nargs="*", help="after --: more options for bench/paper_run.py")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.prepare_data:
        prepare_data(*args.prepare_data, args.views)
        return 0
    check = Check(args)
    skip = set(filter(None, args.skip.split(",")))
    for name, step in (("install", step_install), ("tests", step_tests), ("bench", step_bench),
                       ("paper_run", step_paper_run)):
        if name not in skip:
            step(check)
    s = summary(check)
    (args.out / "gpu_check.json").write_text(json.dumps(s, indent=2) + "\n")
    print_summary(check, s)
    return 0 if all(step["rc"] == 0 for step in check.steps.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
