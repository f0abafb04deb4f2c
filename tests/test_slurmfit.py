"""The check that every SLURM job of a run fits a node of its partition (issue 21 §8), on hand-written ``sinfo``
output: a job that no node can hold is refused with one line naming the stage, what it asks and what the
partition offers. The run on a real one-node SLURM is in tests/test_slurm.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from r2l.core.slurmfit import (
    Node,
    first_misfit,
    option_values,
    parse_gres_gpus,
    parse_sinfo,
    parse_time_limit,
    run_settings,
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
    assert parse_sinfo(text) == [Node(64, 512000, 4, 1440), Node(8, 16000, 0, 120)]
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
