"""The check that every SLURM job of a run fits a node of its partition (issue 21 §8), on hand-written ``sinfo``
output: a job that no node can hold is refused with one line naming the stage, what it asks and what the
partition offers. The run on a real one-node SLURM is in tests/test_slurm.py."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml

from r2l.core.slurmfit import (
    STAGE_RULES,
    Node,
    Setting,
    first_misfit,
    job_ask,
    option_values,
    parse_gres_gpus,
    parse_gres_models,
    parse_resource,
    parse_sinfo,
    parse_time_limit,
    run_settings,
    slurm_extra_gpus,
    slurm_misfit,
    submitted_stages,
)

ROOT = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
TWO_CPU_NODE = "2 3686 gpu:1 infinite\n"  # the CI machine's one node: 2 CPUs, 3686 MB, one GPU, no time limit


def ask(threads=1, mem_mb=1000, gpus=1, runtime=60) -> dict:
    return {"threads": threads, "mem_mb": mem_mb, "gpus": gpus, "runtime": runtime}


@pytest.mark.parametrize("text, minutes", [
    ("infinite", None), ("UNLIMITED", None), ("1-00:00:00", 1440), ("2:00:00", 120), ("30:00", 30), ("1:30", 1.5),
    ("45", 45), ("2-12", 3600), ("1-02:30", 1590), ("0:00:30", 0.5)])
def test_time_limits(text, minutes):
    assert parse_time_limit(text) == minutes


def test_a_bad_time_limit_is_named():
    with pytest.raises(ValueError, match="not a SLURM time limit: 'soon'"):
        parse_time_limit("soon")


@pytest.mark.parametrize("text, gpus", [
    ("gpu:h100:4(S:0-1)", 4), ("gpu:2", 2), ("gpu:a100:2,gpu:v100:1", 3), ("(null)", 0), ("mps:400,gpu:1(S:0)", 1),
    ("gpu:h100:4(S:0,1)", 4), ("gpu:1g.10gb:7", 7), ("gpu", 1), ("tmpdisk:100", 0)])
def test_gpus_of_a_gres(text, gpus):
    assert parse_gres_gpus(text) == gpus


def test_sinfo_lines_become_nodes():
    text = "64 512000 gpu:h100:4(S:0-1) 1-00:00:00\n\n8 16000 (null) 2:00:00\n"
    assert parse_sinfo(text) == [Node(64, 512000, 4, 1440, (("h100", 4),)), Node(8, 16000, 0, 120)]
    with pytest.raises(ValueError, match="unexpected sinfo line"):
        parse_sinfo("64 512000 gpu:4\n")


def test_four_cpus_on_two_cpu_nodes_is_refused_naming_stage_ask_and_offer():
    resources = {stage: ask(threads=4, mem_mb=2000) if stage == "student" else ask() for stage in CONFIG["resources"]}
    line = first_misfit(resources, ["teacher", "student"], parse_sinfo(TWO_CPU_NODE * 2), "gpu")
    assert line == ("r2l: stage student cannot run on SLURM partition 'gpu': resources.student asks for 4 CPUs, "
                    "2000 MB, 1 GPU, 60 min; its nodes have at most 2 CPUs, 3686 MB, 1 GPU and no time limit "
                    "(4 CPUs > 2). Lower resources.student in your config or choose another partition "
                    "(--default-resources slurm_partition=NAME)")


def test_the_default_config_on_a_two_cpu_node_names_every_stage():
    line = first_misfit(CONFIG["resources"], submitted_stages(CONFIG), parse_sinfo(TWO_CPU_NODE), "gpu")
    assert line.startswith("r2l: stage teacher cannot run on SLURM partition 'gpu': resources.teacher asks for "
                           "4 CPUs, 4000 MB, 1 GPU, 60 min; its nodes have at most 2 CPUs, 3686 MB, 1 GPU and no "
                           "time limit (4 CPUs > 2, 4000 MB > 3686). Lower resources.teacher (and pseudo_data, "
                           "student, finetune, evaluate, video, which do not fit either) in your config"), line


@pytest.mark.parametrize("job, sinfo, why", [
    (ask(mem_mb=4000), TWO_CPU_NODE, "4000 MB > 3686"),  # memory in MB
    (ask(gpus=2), "8 64000 gpu:h100:1(S:0-1) infinite\n", "2 GPUs > 1"),
    (ask(gpus=1), "8 64000 (null) infinite\n", "1 GPU > 0"),
    (ask(runtime=180), "8 64000 gpu:2 2:00:00\n", "180 min > 120"),  # a limit of 2 h
    (ask(runtime=1441), "8 64000 gpu:2 1-00:00:00\n", "1441 min > 1440"),  # a limit of one day
    (ask(threads=16, gpus=1), "64 64000 (null) infinite\n8 64000 gpu:4 infinite\n", "no single node has all of them"),
])
def test_what_a_job_asks_beyond_every_node_is_named(job, sinfo, why):
    line = first_misfit({"teacher": job}, ["teacher"], parse_sinfo(sinfo), "p")
    assert line is not None and f"({why})." in line, line


@pytest.mark.parametrize("job, sinfo", [
    (ask(threads=2, mem_mb=3686), TWO_CPU_NODE),  # exactly the node
    (ask(runtime=10**6), TWO_CPU_NODE),  # no time limit
    (ask(runtime=1440), "8 64000 gpu:2 1-00:00:00\n"),
    (ask(threads=16, gpus=0), "64 64000 (null) infinite\n8 64000 gpu:4 infinite\n"),
])
def test_a_job_that_some_node_holds_passes(job, sinfo):
    assert first_misfit({"teacher": job}, ["teacher"], parse_sinfo(sinfo), "p") is None


def test_a_partition_without_nodes_is_named():
    line = first_misfit({"teacher": ask()}, ["teacher"], [], "gpux")
    assert line.startswith("r2l: SLURM partition 'gpux' has no nodes (sinfo -p gpux lists none)"), line


def test_stages_submitted_to_slurm():
    gpu_stages = ["teacher", "pseudo_data", "student", "finetune", "evaluate", "video"]
    assert submitted_stages(CONFIG) == gpu_stages
    photos = {**CONFIG, "scenes": {**CONFIG["scenes"], "plant": {"format": "photos", "path": "x"}}}
    assert submitted_stages(photos) == gpu_stages + ["colmap"]
    assert submitted_stages({**photos, "run_scenes": ["builtin"]}) == gpu_stages  # the photos scene is not run
    assert submitted_stages({**CONFIG, "deploy": {"export": True}}) == gpu_stages + ["light"]  # the export rule


def test_option_values():
    argv = ["-n", "--profile", "p", "target", "--default-resources", "slurm_partition=gpu", "mem_mb=10",
            "--executor=slurm", "-eslurm", "-e", "local", "-ex", "--executors=no"]
    assert option_values(argv, ("--executor", "-e")) == [["slurm"], ["slurm"], ["local"], ["x"]]
    assert option_values(argv, ("--profile",)) == [["p"]]  # one value: "target" is a target
    assert option_values(argv, ("--default-resources",), many=True) == [["slurm_partition=gpu", "mem_mb=10"]]


def write_profile(folder: Path, settings: dict) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(settings))
    return folder


def test_executor_and_partition_from_profiles_and_command_line(tmp_path):
    slurm = write_profile(tmp_path / "slurm", {"executor": "slurm", "default-resources": {"slurm_partition": "gpu"}})
    workflow = tmp_path / "workflow"  # no profiles/default
    settings = lambda *argv, env=None: run_settings(list(argv), env or {}, workflow, [tmp_path])  # noqa: E731
    assert settings("--profile", str(slurm)) == {"executor": "slurm", "partition": "gpu", "partition_config": False}
    assert settings("--profile", "slurm")["partition"] == "gpu"  # a folder name in the current folder
    # --default-resources on the command line replaces the profile's
    assert settings("--profile", str(slurm), "--default-resources", "slurm_partition='big'")["partition"] == "big"
    assert settings("--profile", str(slurm), "--default-resources", "slurm_account=me")["partition"] is None
    assert settings("--profile", str(slurm), "--executor", "local")["executor"] == "local"
    assert settings("--executor", "slurm") == {"executor": "slurm", "partition": None, "partition_config": False}
    assert settings(env={"SNAKEMAKE_PROFILE": str(slurm)})["executor"] == "slurm"
    assert settings("--profile", "none", env={"SNAKEMAKE_PROFILE": str(slurm)})["executor"] is None
    assert settings("--cores", "2")["executor"] is None
    assert settings("--profile", str(slurm), "--slurm-partition-config", "p.yaml")["partition_config"] is True
    with pytest.raises(LookupError, match="profile nowhere not found from"):
        settings("--profile", "nowhere")


def test_the_workflow_profile_wins_key_by_key(tmp_path):
    general = write_profile(tmp_path / "general", {"executor": "slurm", "default-resources": ["slurm_partition=a"]})
    write_profile(tmp_path / "workflow" / "profiles" / "default", {"default-resources": {"slurm_partition": "b"}})
    settings = run_settings(["--profile", str(general)], {}, tmp_path / "workflow", [tmp_path])
    assert settings == {"executor": "slurm", "partition": "b", "partition_config": False}


def test_this_checkouts_slurm_profile():
    settings = run_settings(["--profile", "profiles/slurm"], {}, ROOT, [ROOT])
    assert settings == {"executor": "slurm", "partition": "", "partition_config": False}  # "": the default one


@pytest.fixture
def fake_sinfo(tmp_path, monkeypatch):
    """An ``sinfo`` on PATH that lists two partitions (gpu the default) with one 2-CPU node; its calls logged."""
    script = tmp_path / "bin" / "sinfo"
    script.parent.mkdir()
    script.write_text(f'#!/bin/sh\necho "$*" >> {tmp_path}/calls\ncase "$*" in\n  *%P*) printf "cpu\\ngpu*\\n";;\n'
                      f'  *) printf "{TWO_CPU_NODE}";;\nesac\n')
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{script.parent}{os.pathsep}{os.environ['PATH']}")
    return tmp_path / "calls"


def test_slurm_misfit_asks_sinfo_for_the_default_partition(fake_sinfo, tmp_path):
    line = slurm_misfit(CONFIG, tmp_path, ["snakemake", "--executor", "slurm"], {})
    assert line.startswith("r2l: stage teacher cannot run on SLURM partition 'gpu': "), line
    assert fake_sinfo.read_text().splitlines() == ["-h -o %P", "-h -N -p gpu -o %c %m %G %l"]


def test_slurm_misfit_only_for_slurm_runs(fake_sinfo, tmp_path):
    assert slurm_misfit(CONFIG, tmp_path, ["snakemake", "--cores", "2"], {}) is None
    assert slurm_misfit(CONFIG, tmp_path, ["snakemake", "--executor", "slurm"], {"R2L_SLURM_CHECK": "0"}) is None
    small = {**CONFIG, "resources": {stage: ask(threads=2) for stage in CONFIG["resources"]}}
    assert slurm_misfit(small, tmp_path, ["snakemake", "--executor", "slurm", "--default-resources",
                                          "slurm_partition=gpu"], {}) is None
    assert not fake_sinfo.exists() or "%P" not in fake_sinfo.read_text()  # the partition was given


def test_a_relative_profile_is_found_from_where_snakemake_started(fake_sinfo, tmp_path, monkeypatch, capsys):
    """Snakemake has moved to --directory when the Snakefile is read; $PWD is where it was started."""
    write_profile(tmp_path / "profiles" / "slurm", {"executor": "slurm"})
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    argv = ["snakemake", "--profile", "profiles/slurm", "--directory", "work"]
    assert slurm_misfit(CONFIG, tmp_path / "elsewhere", argv, {"PWD": str(tmp_path)}).startswith("r2l: stage teacher")
    assert slurm_misfit(CONFIG, tmp_path / "elsewhere", argv, {}) is None  # not found: not checked, and said so
    assert capsys.readouterr().err == ("r2l: not checking the jobs' resources against a SLURM partition: cannot "
                                       f"read the run's profiles (profile profiles/slurm not found from "
                                       f"{tmp_path / 'work'})\n")


def test_without_sinfo_the_run_goes_on_with_a_note(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sinfo
    assert slurm_misfit(CONFIG, tmp_path, ["snakemake", "--executor", "slurm"], {}) is None
    assert capsys.readouterr().err == ("r2l: not checking the jobs' resources against a SLURM partition: "
                                       "sinfo failed (sinfo not found)\n")


# ----------------------------------------------------------------------------- overrides (issue 21, item 8 again)

SMALL = {**CONFIG, "resources": {stage: ask(threads=2, mem_mb=2000) for stage in CONFIG["resources"]}}
HOUR_NODE = "2 3686 gpu:1 1:00:00\n"  # 2 CPUs, 3686 MB, one GPU, a limit of 60 min: SMALL's jobs just fit


def with_teacher(**changes) -> dict:
    """SMALL with resources.teacher changed."""
    return {**SMALL, "resources": {**SMALL["resources"], "teacher": {**SMALL["resources"]["teacher"], **changes}}}


@pytest.fixture
def cluster(tmp_path, monkeypatch):
    """Puts on PATH an ``sinfo`` that lists the partitions given (name=node lines, the first the default) and
    returns its log of calls; a partition not given has no nodes."""
    script, calls = tmp_path / "bin" / "sinfo", tmp_path / "calls"
    script.parent.mkdir()
    monkeypatch.setenv("PATH", f"{script.parent}{os.pathsep}{os.environ['PATH']}")

    def make(**partitions) -> Path:
        names = "\\n".join(name + "*" * (i == 0) for i, name in enumerate(partitions))
        cases = "".join(f'  *"-p {name} "*) printf "{nodes}";;\n' for name, nodes in partitions.items())
        script.write_text(f'#!/bin/sh\necho "$*" >> {calls}\ncase "$*" in\n  *%P*) printf "{names}\\n";;\n'
                          f"{cases}esac\n")
        script.chmod(0o755)
        return calls

    return make


def check(tmp_path: Path, config: dict, *argv: str) -> str | None:
    """slurm_misfit for ``snakemake --executor slurm ARGV`` (a workflow without profiles/default)."""
    return slurm_misfit(config, tmp_path / "workflow", ["snakemake", "--executor", "slurm", *argv], {})


@pytest.mark.parametrize("argv, set_by, why", [
    (["--set-resources", "train_teacher:mem_mb=64000"], "mem_mb 64000", "64000 MB > 3686"),
    (["--set-resources", "train_teacher:mem=8G"], "mem_mb 8000", "8000 MB > 3686"),  # human-readable, as Snakemake
    (["--set-resources", "train_teacher:mem_mib=4000"], "mem_mb 4194", "4194 MB > 3686"),
    (["--set-resources", "train_teacher:mem_mb_per_cpu=2000"], "mem_mb 4000", "4000 MB > 3686"),  # x 2 CPUs
    (["--set-resources", "train_teacher:runtime=2h"], "runtime 120", "120 min > 60"),
    (["--set-resources", "train_teacher:runtime=61"], "runtime 61", "61 min > 60"),
    (["--set-resources", "train_teacher:gpu=2"], "gpus 2", "2 GPUs > 1"),
    (["--set-resources", "train_teacher:gres=gpu:2"], "gpus 2", "2 GPUs > 1"),
    (["--set-resources", "train_teacher:gres=gpu:a100:1"], "gpus 1", "1 a100 GPU > 0, GPU models of the nodes: none named"),
    (["--set-resources", "train_teacher:slurm_extra='--qos=long --gres=gpu:2'"], "gpus 2", "2 GPUs > 1"),
    (["--set-resources", "train_teacher:cpus_per_task=4"], "threads 4", "4 CPUs > 2"),
    (["--set-resources", "train_teacher:cpus_per_gpu=3"], "threads 3", "3 CPUs > 2"),  # x 1 GPU
    (["--set-threads", "train_teacher=4"], "threads 4", "4 CPUs > 2"),
    (["--default-resources", "slurm_partition=gpu", "cpus_per_task=4"], "threads 4", "4 CPUs > 2"),  # all rules
])
def test_an_override_that_raises_a_job_above_every_node_stops_the_run_naming_it(cluster, tmp_path, argv, set_by,
                                                                                 why):
    cluster(gpu=HOUR_NODE)
    assert check(tmp_path, SMALL) is None
    line = check(tmp_path, SMALL, *argv)
    origin = f"{argv[0]} {argv[-1]}"
    assert line.startswith("r2l: stage teacher cannot run on SLURM partition 'gpu': rule train_teacher asks for "), line
    assert f"({set_by} from {origin});" in line and f"({why}). Lower {origin} " in line, line


def test_the_line_of_an_override(cluster, tmp_path):
    cluster(gpu=TWO_CPU_NODE)
    line = check(tmp_path, SMALL, "--set-resources", "train_teacher:mem_mb=64000", "train_student:mem=64G")
    assert line == ("r2l: stage teacher cannot run on SLURM partition 'gpu': rule train_teacher asks for 2 CPUs, "
                    "64000 MB, 1 GPU, 60 min (mem_mb 64000 from --set-resources train_teacher:mem_mb=64000); its nodes "
                    "have at most 2 CPUs, 3686 MB, 1 GPU and no time limit (64000 MB > 3686). Lower --set-resources "
                    "train_teacher:mem_mb=64000 (and student, which do not fit either) or choose another partition "
                    "(--default-resources slurm_partition=NAME)")
    line = check(tmp_path, with_teacher(threads=4), "--set-resources", "train_teacher:mem_mb=64000")
    assert "(4 CPUs > 2, 64000 MB > 3686). Lower resources.teacher in your config and --set-resources " in line, line


@pytest.mark.parametrize("too_big, argv", [
    ({"mem_mb": 8000}, ["--set-resources", "train_teacher:mem_mb=3000"]),
    ({"mem_mb": 8000}, ["--set-resources", "train_teacher:mem=3GB"]),
    ({"mem_mb": 8000}, ["--set-resources", "train_teacher:mem_mb_per_cpu=1500"]),  # --mem-per-cpu wins over --mem
    ({"runtime": 180}, ["--set-resources", "train_teacher:runtime=1h"]),
    ({"gpus": 2}, ["--set-resources", "train_teacher:gpu=1"]),
    ({"gpus": 2}, ["--set-resources", "train_teacher:gpu=0", "train_teacher:gres=gpu:1"]),
    ({"threads": 8}, ["--set-threads", "train_teacher=2"]),
    ({"threads": 8}, ["--set-resources", "train_teacher:cpus_per_task=2"]),  # --cpus-per-task wins over threads
    ({"threads": 8}, ["--set-resources", "train_teacher:cpus_per_gpu=2"]),
    ({"threads": 8}, ["--default-resources", "cpus_per_task=2"]),  # a resource the rules do not set
])
def test_an_override_that_lowers_a_job_that_no_node_holds_lets_the_run_go(cluster, tmp_path, too_big, argv):
    cluster(gpu=HOUR_NODE)
    assert check(tmp_path, with_teacher(**too_big)).startswith("r2l: stage teacher cannot run")
    assert check(tmp_path, with_teacher(**too_big), *argv) is None


def test_a_rules_partition_is_checked_against_that_partitions_nodes(cluster, tmp_path):
    calls = cluster(gpu=TWO_CPU_NODE, big="64 512000 gpu:4 infinite\n", tiny="1 1000 (null) infinite\n")
    line = check(tmp_path, with_teacher(threads=8))
    assert line.startswith("r2l: stage teacher cannot run on SLURM partition 'gpu'"), line
    calls.unlink()
    assert check(tmp_path, with_teacher(threads=8), "--set-resources", "train_teacher:slurm_partition=big") is None
    assert calls.read_text().splitlines() == ["-h -o %P", "-h -N -p big -o %c %m %G %l", "-h -N -p gpu -o %c %m %G %l"]
    line = check(tmp_path, SMALL, "--default-resources", "slurm_partition=big",
                 "--set-resources", "train_student:slurm_partition='tiny'")
    assert line == ("r2l: stage student cannot run on SLURM partition 'tiny' (slurm_partition from --set-resources "
                    "train_student:slurm_partition='tiny'): resources.student asks for 2 CPUs, 2000 MB, 1 GPU, 60 min; "
                    "its nodes have at most 1 CPU, 1000 MB, 0 GPUs and no time limit (2 CPUs > 1, 2000 MB > 1000, "
                    "1 GPU > 0). Lower resources.student in your config or choose another partition (--set-resources "
                    "train_student:slurm_partition=NAME)")
    line = check(tmp_path, SMALL, "--set-resources", "train_teacher:slurm_partition=nowhere")
    assert line.startswith("r2l: SLURM partition 'nowhere' (slurm_partition from --set-resources train_teacher:"
                           "slurm_partition=nowhere) has no nodes (sinfo -p nowhere lists none): give an existing "
                           "partition with --set-resources train_teacher:slurm_partition=NAME"), line


def test_with_a_partition_config_only_rules_with_a_partition_are_checked(cluster, tmp_path):
    calls = cluster(gpu=TWO_CPU_NODE, tiny="1 1000 (null) infinite\n")
    argv = ("--slurm-partition-config", "p.yaml", "--set-resources", "train_teacher:slurm_partition=tiny")
    assert check(tmp_path, SMALL, *argv).startswith("r2l: stage teacher cannot run on SLURM partition 'tiny'")
    assert calls.read_text().splitlines() == ["-h -N -p tiny -o %c %m %G %l"]  # the plugin places the others


def test_overrides_in_profiles_are_read_and_named(cluster, tmp_path):
    cluster(gpu=TWO_CPU_NODE, big="64 512000 gpu:4 infinite\n")
    listed = write_profile(tmp_path / "listed", {"executor": "slurm", "set-resources": ["train_teacher:mem_mb=64000"]})
    line = slurm_misfit(SMALL, tmp_path, ["snakemake", "--profile", str(listed)], {})
    origin = f"set-resources train_teacher:mem_mb=64000 in the profile {listed / 'config.yaml'}"
    assert f"(mem_mb 64000 from {origin}); " in line and f"Lower {origin} or" in line, line
    mapped = write_profile(tmp_path / "mapped", {"executor": "slurm", "set-resources": {"train_teacher": {"gpu": 2}},
                                                 "set-threads": {"train_student": 4}})
    line = slurm_misfit(SMALL, tmp_path, ["snakemake", "--profile", str(mapped)], {})
    assert "(gpus 2 from set-resources train_teacher:gpu=2 in the profile " in line and "(and student," in line, line
    lowered = write_profile(tmp_path / "lowered", {
        "executor": "slurm", "set-resources": {"train_teacher": {"mem": "3G", "slurm_partition": "big"}},
        "set-threads": ["train_student=2"], "default-resources": {"cpus_per_task": 1}})
    run = ["snakemake", "--profile", str(lowered)]
    assert slurm_misfit(with_teacher(mem_mb=8000, threads=16), tmp_path, run, {}) is None  # on big, in 3000 MB


def test_the_command_line_wins_over_profiles_and_overrides_over_the_rules_values(cluster, tmp_path):
    cluster(gpu=HOUR_NODE)
    profile = write_profile(tmp_path / "p", {"executor": "slurm", "set-threads": ["train_student=8"],
                                             "set-resources": {"train_teacher": {"mem_mb": 64000}}})
    run = lambda *argv: slurm_misfit(SMALL, tmp_path, ["snakemake", "--profile", str(profile), *argv], {})  # noqa
    assert "(mem_mb 64000 from set-resources train_teacher:mem_mb=64000 in the profile " in run()
    # as in Snakemake, --set-resources and --set-threads replace the profile's lists
    assert run("--set-resources", "train_teacher:mem_mb=3000", "--set-threads", "train_student=2") is None
    assert run("--set-resources", "train_finetune:mem_mb=1", "--set-threads", "train_student=2") is None
    assert "(threads 8 from set-threads train_student=8 in the profile " in run("--set-resources", "a:mem_mb=1")
    # the rules set mem_mb and runtime (the config's resources), which default resources do not change ...
    assert run("--set-resources", "a:b=1", "--set-threads", "a=1", "--default-resources", "mem_mb=64000",
               "runtime=600") is None
    # ... and --set-resources wins over a default resource the rules leave unset
    line = run("--set-resources", "train_teacher:cpus_per_task=2", "--set-threads", "a=1",
               "--default-resources", "cpus_per_task=4")
    assert line.startswith("r2l: stage pseudo_data cannot run") and "(threads 4 from --default-resources" in line
    # the workflow profile wins over --profile, key by key
    write_profile(tmp_path / "profiles" / "default", {"set-resources": ["train_teacher:mem_mb=3000"]})
    assert run("--set-threads", "train_student=2") is None


def test_max_threads_lowers_every_rules_threads(cluster, tmp_path):
    """As Snakemake does: a rule asking more threads than --max-threads (or a profile's max-threads) gets that many."""
    cluster(gpu=HOUR_NODE)  # 2 CPUs a node
    profile = write_profile(tmp_path / "p", {"executor": "slurm", "set-threads": ["train_student=8"]})
    run = lambda *argv: slurm_misfit(SMALL, tmp_path, ["snakemake", "--profile", str(profile), *argv], {})  # noqa
    assert "(threads 8 from set-threads train_student=8 in the profile " in run()
    assert run("--max-threads", "2") is None and run("--max-threads=2") is None
    assert "(threads 3 from --max-threads 3)" in run("--max-threads", "3")  # it lowers, never raises
    write_profile(tmp_path / "profiles" / "default", {"max-threads": 2})
    assert run() is None


def test_malformed_override_text_is_skipped(cluster, tmp_path, capsys):
    cluster(gpu=TWO_CPU_NODE)
    argv = ["--set-resources", "train_teacher", "mem_mb=64000", ":mem_mb=64000", "train-teacher:mem_mb=64000",
            "train_teacher:=5", "train_teacher:tmpdir=/scratch", "train_teacher:gres=", "train_teacher:mem_mb",
            "--set-threads", "=4", "train_teacher", "--default-resources", "mem_mb", "slurm_partition", "=gpu"]
    assert check(tmp_path, SMALL, *argv) is None
    bad = write_profile(tmp_path / "bad", {
        "executor": "slurm", "set-resources": {"train_teacher": 64000, "train_student": {"mem_mb": None}},
        "set-threads": {"train_teacher": [8]}, "default-resources": 5})
    assert slurm_misfit(SMALL, tmp_path, ["snakemake", "--profile", str(bad)], {}) is None
    odd = write_profile(tmp_path / "odd", {"executor": "slurm", "set-resources": ["x", 3, {"train_teacher": "a"}],
                                           "set-threads": "train_teacher", "default-resources": [["cpus_per_task=9"]]})
    assert slurm_misfit(SMALL, tmp_path, ["snakemake", "--profile", str(odd)], {}) is None
    assert capsys.readouterr().err == ""


def test_a_value_the_check_cannot_read_is_left_unchecked_and_said(cluster, tmp_path, capsys):
    cluster(gpu=HOUR_NODE)
    too_big = with_teacher(mem_mb=8000, runtime=180, threads=8)
    argv = ["--set-resources", "train_teacher:mem_mb=min(3000, 2*input.size_mb)", "train_teacher:runtime=soon",
            "--set-threads", "train_teacher=lots"]
    assert check(tmp_path, too_big, *argv) is None
    assert capsys.readouterr().err == (
        "r2l: not checking what these set against the SLURM partition (values the check cannot read): "
        "--set-resources train_teacher:mem_mb=min(3000, 2*input.size_mb); --set-resources train_teacher:runtime=soon; "
        "--set-threads train_teacher=lots\n")


@pytest.mark.parametrize("key, text, parsed", [
    ("mem", "64G", ("mem_mb", 64000)), ("mem", "64GB", ("mem_mb", 64000)), ("mem", "64GiB", ("mem_mb", 68720)),
    ("mem", "4000", ("mem_mb", 4000)), ("mem", "'500 MB'", ("mem_mb", 500)), ("mem_mib", "1024", ("mem_mb", 1073)),
    ("mem_mb", "64G", ("mem_mb", None)), ("mem", "9" * 40 + "G", ("mem_mb", None)), ("runtime", "2h", ("runtime", 120)),
    ("runtime", "90", ("runtime", 90)), ("runtime", "1.5 hours", ("runtime", 90)), ("runtime", "1d", ("runtime", 1440)),
    ("runtime", "30s", ("runtime", 1)), ("runtime", "2*60", ("runtime", None)), ("gpu", "2", ("gpu", 2)),
    ("cpus_per_task", "-1", ("cpus_per_task", -1)), ("slurm_partition", "'big'", ("slurm_partition", "big")),
    ("gres", "gpu:a100:2", ("gres", "gpu:a100:2")), ("tmpdir", "/scratch", None), ("slurm_account", "me", None),
])
def test_resource_values_are_read_as_snakemake_reads_them(key, text, parsed):
    assert parse_resource(key, text) == parsed


@pytest.mark.parametrize("text, gpus", [
    ("--gres=gpu:a100:2", 2), ("--gpus=3", 3), ("-G 2", 2), ("--gpus-per-node=h100:4", 4), ("--qos=long", 0),
    ("--gres=gpu:1 --gpus=2", 2), ("--gres gpu:4(S:0-1)", 4), ("--gpus-per-task=2", 0), ("--gres=tmpdisk:100", 0)])
def test_gpus_asked_in_slurm_extra(text, gpus):
    assert slurm_extra_gpus(text) == gpus


def test_each_stage_is_the_rule_the_workflow_submits():
    """STAGE_RULES names, per stage, the rule of workflow/rules/*.smk that takes its resources and is not local."""
    found = {}
    for smk in sorted((ROOT / "workflow" / "rules").glob("*.smk")):
        for block in re.split(r"^rule ", smk.read_text(), flags=re.MULTILINE)[1:]:
            stage = re.search(r'job_threads\("(\w+)"\)', block)
            if stage and "localrule: True" not in block:
                assert f'job_resources("{stage[1]}")' in block
                found[stage[1]] = block.split(":", 1)[0]
    assert found == STAGE_RULES


def test_large_values_are_written_in_full():
    line = first_misfit({"teacher": ask(mem_mb=2000000)}, ["teacher"], parse_sinfo("128 1000000 gpu:8 infinite\n"), "p")
    assert "(2000000 MB > 1000000)." in line, line


@pytest.mark.parametrize("text, models", [
    ("gpu:h100:4(S:0-1)", (("h100", 4),)), ("gpu:2", (("", 2),)), ("gpu:a100:2,gpu:v100:1", (("a100", 2), ("v100", 1))),
    ("gpu:h100", (("h100", 1),)), ("(null)", ()), ("gpu:a100:2(IDX:0-1),mps:100", (("a100", 2),))])
def test_gpu_models_of_a_gres(text, models):
    assert parse_gres_models(text) == models


@pytest.mark.parametrize("res, model", [
    ({"gres": "gpu:a100:1"}, "a100"), ({"gres": "gpu:1"}, None), ({"slurm_extra": "--gres=gpu:v100:2 --qos=x"}, "v100"),
    ({"slurm_extra": "--gpus=h100:2"}, "h100"), ({"slurm_extra": "-G 2"}, None), ({}, None)])
def test_the_gpu_model_a_job_asks_for(res, model):
    settings = {"mem_mb": Setting(1000), "runtime": Setting(60), "gpu": Setting(1)}
    settings.update({key: Setting(value) for key, value in res.items()})
    ask, _ = job_ask(settings, Setting(1))
    assert ask["gpu_model"] == model


A100_AND_V100 = "16 64000 gpu:a100:2(S:0) infinite\n16 64000 gpu:v100:4 infinite\n"


@pytest.mark.parametrize("gpus, model, fits", [
    (2, "a100", True), (3, "a100", False), (4, "v100", True), (1, "h100", False), (4, None, True), (5, None, False)])
def test_a_gpu_model_must_be_on_a_node_in_that_number(gpus, model, fits):
    job = {**ask(gpus=gpus), "gpu_model": model}
    line = first_misfit({"teacher": job}, ["teacher"], parse_sinfo(A100_AND_V100), "p")
    assert (line is None) == fits, line
    if model == "h100":
        assert "asks for 1 CPU, 1000 MB, 1 h100 GPU, 60 min" in line, line
        assert "at most 16 CPUs, 64000 MB, 0 h100 GPUs" in line, line
        assert "(1 h100 GPU > 0, GPU models of the nodes: a100, v100)." in line, line
