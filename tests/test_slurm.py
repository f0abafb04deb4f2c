"""The SLURM profile on a real single-node SLURM (issue 10 §3).

``tests/slurm/cluster.sh`` brings up slurmctld and slurmd on this host with one pretend GPU (a GRES whose device
file is /dev/null, so ``--gpus=1`` is really scheduled); the module runs the tiny config (the built-in orbit scene,
``tests/slurm/slurm_test.yaml`` over ``.test/config/config.yaml``) through ``profiles/slurm`` while the same config runs
locally beside it, requeues the student-training job once it has a checkpoint (``scontrol requeue``, as a
preemption does), and checks the sbatch calls, the jobs SLURM ran, that no two GPU jobs overlapped, that the
results have the same files as the local run and that the requeued student resumed and ended at the same step.
Where SLURM cannot be brought up (not root, packages missing and not installable, daemons failing) the tests that
need it are skipped with the reason; the cluster is always torn down.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from helpers import ROOT, TEST_CONFIG, run_snakemake, snakemake_command

CLUSTER = ROOT / "tests" / "slurm" / "cluster.sh"
CONFIGS = [str(TEST_CONFIG), str(ROOT / "tests" / "slurm" / "slurm_test.yaml")]
SETTINGS = yaml.safe_load(Path(CONFIGS[1]).read_text())
PARTITION = "gpu"
GPU_RULES = {"train_teacher": "teacher", "pseudo_data_part": "pseudo_data", "train_student": "student",
             "finetune": "finetune", "evaluate": "evaluate", "video": "video"}
LOCAL_RULES = ["builtin_scene", "real_data", "pseudo_data", "comparison_figure", "curves", "summary"]
PARTS = yaml.safe_load(Path(CONFIGS[0]).read_text())["pseudo_data"]["jobs"]  # pseudo_data_part jobs (2)
SCENE = "builtin"
FAMILIES = 1 + len(yaml.safe_load(Path(CONFIGS[0]).read_text())["scenes"][SCENE]["student"]["compare"])  # 2
JOBS = {rule: PARTS if rule == "pseudo_data_part" else FAMILIES if rule in ("train_student", "finetune") else 1
        for rule in GPU_RULES}  # sbatch jobs per GPU rule: the student and finetuning once per student family
RUN_TIMEOUT = 900  # seconds for the SLURM run (it takes about 3 minutes on an idle 2-core machine)

pytestmark = pytest.mark.slow


def slurm_args(*extra: str) -> list[str]:
    """The profile, plus what this test cluster needs: no accounting (squeue for the status, no account), quick
    first status checks, and the plugin's logs kept."""
    return ["--profile", str(ROOT / "profiles" / "slurm"), "--slurm-status-command", "squeue", "--slurm-no-account",
            "--slurm-init-seconds-before-status-checks", "1", "--slurm-keep-successful-logs", "--latency-wait", "5",
            "--verbose", *extra]


def slurm_command(workdir: Path, *configs: str) -> list[str]:
    """Snakemake on the tiny config with the SLURM settings (and ``configs`` over them) through the profile, on
    the test cluster's partition."""
    return snakemake_command(workdir, *slurm_args("--default-resources", f"slurm_partition={PARTITION}"),
                             configfiles=(*CONFIGS, *configs), cores=None, gpus=None)


def sh(*cmd: str, timeout: float = 30) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout).stdout


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A running single-node SLURM (skips the module with the reason when it cannot be brought up)."""
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        pytest.skip("snakemake-executor-plugin-slurm is not installed (pip install -e '.[slurm]')")
    folder = tmp_path_factory.mktemp("slurm")
    up = subprocess.run(["bash", str(CLUSTER), "up", str(folder)], capture_output=True, text=True, timeout=900)
    try:
        if up.returncode != 0:
            reason = (up.stderr.strip().splitlines() or [f"cluster.sh up exited with {up.returncode}"])[-1]
            print(reason, file=sys.stderr)
            pytest.skip(reason)
        yield folder
    finally:
        subprocess.run(["bash", str(CLUSTER), "down", str(folder)], capture_output=True, text=True, timeout=120)


def slurm_jobs() -> dict[str, dict[str, str]]:
    """Every job slurmctld still knows (MinJobAge is an hour on the test cluster), by id: its fields."""
    jobs = {}
    for line in sh("scontrol", "show", "job", "--oneliner").splitlines():
        fields = dict(re.findall(r"([\w/:]+)=(\S*)", line))
        if "JobId" in fields:
            jobs[fields["JobId"]] = fields
    return jobs


def requeue_student(workdir: Path, proc: subprocess.Popen, log) -> str:
    """Requeue the student job once it runs and has written a checkpoint, as a preemption would; return its id."""
    resume = workdir / "resources" / "resume" / SCENE / "student"
    while proc.poll() is None:
        running = sh("squeue", "--states=RUNNING", "--noheader", "--format=%i %k").split("\n")
        ids = [line.split()[0] for line in running if f"rule_train_student_wildcards_{SCENE}" in line]
        if ids and list(resume.glob("ckpt_*.pt")):
            subprocess.run(["scontrol", "requeue", ids[0]], check=True, timeout=30)
            print(f"requeued job {ids[0]} with {sorted(p.name for p in resume.glob('ckpt_*.pt'))}", file=log)
            release(ids[0])
            return ids[0]
        time.sleep(0.3)
    return ""


def release(job: str) -> None:
    """SLURM holds a requeued job for about two minutes (BeginTime); let it start as soon as it is pending again."""
    for _ in range(120):
        state = sh("squeue", "--jobs", job, "--noheader", "--format=%T %r").split()
        if state[:2] == ["PENDING", "BeginTime"]:
            subprocess.run(["scontrol", "update", f"jobid={job}", "StartTime=now"], timeout=30)
            return
        if state[:1] == ["RUNNING"]:
            return
        time.sleep(0.5)


@pytest.fixture(scope="module")
def runs(cluster, tmp_path_factory):
    """The tiny config through profiles/slurm (student requeued once) and, at the same time, locally."""
    local_dir, slurm_dir = tmp_path_factory.mktemp("local"), tmp_path_factory.mktemp("on_slurm")
    start = time.time()
    with open(local_dir / "run.log", "w") as local_log, open(slurm_dir / "run.log", "w") as slurm_log:
        local = subprocess.Popen(snakemake_command(local_dir, configfiles=CONFIGS), stdout=local_log,
                                 stderr=subprocess.STDOUT)
        on_slurm = subprocess.Popen(slurm_command(slurm_dir), stdout=slurm_log, stderr=subprocess.STDOUT)
        try:
            requeued = requeue_student(slurm_dir, on_slurm, sys.stderr)
            slurm_rc = on_slurm.wait(timeout=RUN_TIMEOUT)
            local_rc = local.wait(timeout=RUN_TIMEOUT)
        finally:
            for proc in (local, on_slurm):
                if proc.poll() is None:
                    proc.kill()
    print(f"local and SLURM runs took {time.time() - start:.0f} s", file=sys.stderr)
    slurm_text = (slurm_dir / "run.log").read_text()
    assert local_rc == 0, (local_dir / "run.log").read_text()[-4000:]
    assert slurm_rc == 0, slurm_text[-6000:]
    return SimpleNamespace(local=local_dir, slurm=slurm_dir, requeued=requeued, log=slurm_text, jobs=slurm_jobs(),
                           times=(cluster / "jobtimes.log").read_text())


def sbatch_calls(log: str) -> dict[str, list[str]]:
    """The plugin's sbatch calls (logged with --verbose), by rule, without the wrapped command."""
    calls: dict[str, list[str]] = {}
    for call in re.findall(r"sbatch call: (sbatch .*?) --wrap=", log):
        rule = re.search(r"--comment rule_(\w+?)_wildcards_", call).group(1)
        calls.setdefault(rule, []).append(call)
    return calls


def test_every_gpu_rule_went_through_sbatch_with_its_resources(runs):
    calls = sbatch_calls(runs.log)
    for rule, stage in GPU_RULES.items():
        res = SETTINGS["resources"][stage]
        assert len(calls.get(rule, [])) == JOBS[rule], f"{rule}: {calls.get(rule)}"
        for call in calls[rule]:
            print(re.sub(r"--job-name \S+ --output \S+ ", "", call))
            for flag in (f"-p {PARTITION}", f"--gpus={res['gpus']}", f"--mem {res['mem_mb']}",
                         f"-t {res['runtime']}", f"--cpus-per-task={res['threads']}", "--requeue"):
                assert f" {flag} " in f" {call} ", f"{rule}: {flag!r} not in {call}"
    for rule in LOCAL_RULES:  # these run on the submitting host
        assert rule not in calls, rule
        assert (runs.slurm / "logs" / SCENE / f"{rule}.log").is_file() or rule == "summary", rule


def test_slurm_ran_each_gpu_job_as_configured(runs):
    by_rule: dict[str, list[dict]] = {}
    for job in runs.jobs.values():
        rule = re.match(r"rule_(\w+?)_wildcards_", job.get("Comment", ""))
        if rule:
            by_rule.setdefault(rule.group(1), []).append(job)
    assert {rule: len(jobs) for rule, jobs in by_rule.items()} == JOBS
    for rule, stage in GPU_RULES.items():
        res = SETTINGS["resources"][stage]
        for job in by_rule[rule]:
            assert job["JobState"] == "COMPLETED" and job["Partition"] == PARTITION, job
            assert job["TresPerJob"] == f"gres:gpu:{res['gpus']}", job
            assert job["CPUs/Task"] == str(res["threads"]) and job["MinMemoryNode"] == f"{res['mem_mb']}M", job
            assert job["TimeLimit"] == f"00:{res['runtime']:02d}:00" and job["Requeue"] == "1", job


def test_no_two_gpu_jobs_overlapped(runs):
    """slurmd's prolog and epilog log each job's start and end on the node (the GPU is released after the epilog)."""
    record = runs.jobs.get(runs.requeued, {})
    started = epoch(record["StartTime"]) if record.get("StartTime", "Unknown") != "Unknown" else None
    spans = job_spans(runs.times, runs.requeued, started)
    spans.sort()
    assert len(spans) == sum(JOBS.values()) + 1, spans  # the jobs of each GPU rule, the student's twice
    assert all(gpus == "gpus=0" for *_, gpus in spans), spans
    for (_, end, job, _), (start, _, nxt, _) in zip(spans, spans[1:]):
        assert start >= end, f"job {nxt} started {end - start:.2f} s before job {job} ended"
    # Not vacuous: a GPU job waited in the queue while another held the GPU (evaluate and video are submitted
    # together), though the node had the CPUs and memory for both.
    submitted = {job: epoch(fields["SubmitTime"]) for job, fields in runs.jobs.items()}
    first_start: dict[str, float] = {}
    for start, _, job, _ in spans:
        first_start.setdefault(job, start)
    waited = [(job, other) for job, begun in first_start.items() for start, end, other, _ in spans
              if other != job and begun - submitted[job] > 5 and start < begun and end > submitted[job] + 1]
    assert waited, (submitted, spans)


def job_spans(times: str, requeued: str, started: float | None) -> list[tuple[float, float, str, str]]:
    """(start, end, job, gpus) of each run of a job on the node, from the prolog and epilog lines in time order.

    slurmd runs the prolog once per job id on a node: the requeued job's second run logs only its epilog, and its
    start is SLURM's record of it (``started``: scontrol's StartTime, to the second; taken as the end of that
    second, so that a run that began within it is not counted as overlapping the one before). Any other epilog
    without a prolog, or a prolog without an epilog, fails the test.
    """
    events = sorted((float(stamp), job, phase, gpus) for job, phase, stamp, gpus in map(str.split, times.splitlines()))
    open_starts: dict[str, list[float]] = {}
    spans = []
    for stamp, job, phase, gpus in events:
        if phase == "prolog":
            open_starts.setdefault(job, []).append(stamp)
        elif open_starts.get(job):
            spans.append((open_starts[job].pop(0), stamp, job, gpus))
        else:
            assert job == requeued and started is not None, f"job {job} ended without a start:\n{times}"
            spans.append((min(started + 1.0, stamp), stamp, job, gpus))
    assert not any(open_starts.values()), f"jobs without an end: {open_starts}\n{times}"
    return spans


def epoch(stamp: str) -> float:
    """Seconds since the epoch of one of scontrol's local times (2026-11-30T16:22:05)."""
    return time.mktime(time.strptime(stamp, "%Y-%m-%dT%H:%M:%S"))


def test_results_have_the_same_files_as_a_local_run(runs):
    def files(root: Path) -> set[str]:
        return {str(p.relative_to(root)) for p in (root / "results").rglob("*") if p.is_file()}

    assert files(runs.slurm) == files(runs.local)
    assert (runs.slurm / "results" / "summary.md").is_file()


def test_requeued_student_resumed_from_its_checkpoint(runs):
    assert runs.requeued, "the student job finished before it could be requeued"
    job = runs.jobs[runs.requeued]
    assert job["Restarts"] == "1" and job["JobState"] == "COMPLETED", job
    attempts = sorted((runs.slurm / "logs" / SCENE / "attempts").glob("train_student.*.log"))
    assert len(attempts) == 2, attempts
    resumed = re.search(r"resuming student from step (\d+)", attempts[1].read_text())
    assert resumed and int(resumed.group(1)) > 0, attempts[1].read_text()[-2000:]
    print(f"job {runs.requeued}: {resumed.group(0)}")

    def step(root: Path) -> int:
        return torch.load(root / "results" / SCENE / "student" / "model.pt", map_location="cpu",
                          weights_only=False)["step"]

    assert step(runs.slurm) == step(runs.local) == SETTINGS["student"]["steps"]


def test_a_job_no_node_can_hold_stops_the_run_before_any_submission(cluster, tmp_path):
    """The student asks for one CPU more than the node has (issue 21 §8): instead of a job PENDING for ever
    (reason PartitionConfig), the run stops at once, before any sbatch, with one line naming the stage, what it
    asks and what the partition offers."""
    cpus, mem = map(int, sh("sinfo", "-h", "-N", "-p", PARTITION, "-o", "%c %m").split()[:2])
    student = {**SETTINGS["resources"]["student"], "threads": cpus + 1}
    extra = tmp_path / "too_many_cpus.yaml"
    extra.write_text(yaml.safe_dump({"resources": {"student": student}}))
    jobs_before = set(slurm_jobs())
    start = time.time()
    result = subprocess.run(slurm_command(tmp_path / "run", str(extra)), capture_output=True, text=True, timeout=300)
    took = time.time() - start
    out = result.stdout + result.stderr
    line = (f"r2l: stage student cannot run on SLURM partition '{PARTITION}': resources.student asks for {cpus + 1} "
            f"CPUs, {student['mem_mb']} MB, 1 GPU, {student['runtime']} min; its nodes have at most {cpus} CPUs, "
            f"{mem} MB, 1 GPU and no time limit ({cpus + 1} CPUs > {cpus}). Lower resources.student in your config "
            f"or choose another partition (--default-resources slurm_partition=NAME)")
    print(f"stopped after {took:.1f} s: {out.strip().splitlines()[-1]}")
    assert result.returncode == 1, out[-3000:]
    assert out.strip().splitlines()[-1] == line and out.count("r2l: stage ") == 1, out[-3000:]
    assert "sbatch" not in out and set(slurm_jobs()) == jobs_before, out[-3000:]
    assert took < 90, f"the run took {took:.0f} s to stop"


def test_rules_take_their_resources_from_the_config(tmp_path):
    """No cluster needed: a dry run shows each rule's threads, gpu, mem_mb and runtime from the config's
    resources: section (threads capped at --cores, as on one machine)."""
    result = run_snakemake(tmp_path, "-n", "--forceall", configfiles=CONFIGS, cores=2)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    blocks = re.findall(r"^rule (\w+):\n(.*?)(?=^\S|\Z)", result.stdout + result.stderr, re.M | re.S)
    stages = {**GPU_RULES, **{rule: "light" for rule in LOCAL_RULES}}
    seen = set()
    for rule, block in blocks:
        if rule not in stages:
            continue
        res = SETTINGS["resources"][stages[rule]]
        threads = re.search(r"threads: (\d+)", block)
        assert (int(threads.group(1)) if threads else 1) == min(res["threads"], 2), (rule, block)
        for key, value in (("gpu", res["gpus"]), ("mem_mb", res["mem_mb"]), ("runtime", res["runtime"])):
            assert re.search(rf"\b{key}={value}\b", block), (rule, key, block)
        seen.add(rule)
    assert seen == set(stages)
