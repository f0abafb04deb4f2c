"""The benchmark's pieces (never its times): the pipeline's benchmark files, the teacher sizes it reads, the GPU
targets' verdicts, the lego copy for the GPU machine, and the GPU check's dry run, which runs every step of
bench/gpu_check.py on the CPU at toy sizes."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import NEEDS_CXX, ROOT

from r2l.bench import (
    FRAME_SIDE,
    GRID_BOX,
    GRID_FLOPS_NOTE,
    GRID_NETWORKS,
    STUDENTS,
    bench_render,
    bench_render_compiled,
    bench_training,
    build_student_net,
    format_table,
    frame_rays,
    network_flops,
    pipeline_times,
    read_benchmark,
    settings_for,
    speedups,
    teacher_config,
)
from r2l.models.flops import flops_per_ray, student_closed_form_flops
from r2l.models.gridstudent import GridStudentConfig, GridStudentNet, grid_student_lookup_flops
from r2l.models.r2lnet import R2LNetConfig
from r2l.models.students import Student

TSV_HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def load_script(name: str):
    """A script of bench/ as a module (they are not part of the package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_tsv(path: Path, *rows: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(TSV_HEADER + "".join(r + "\n" for r in rows))


def test_pipeline_times_from_snakemake_benchmark_files(tmp_path):
    write_tsv(tmp_path / "builtin" / "train_teacher.tsv", "60.0\t0:01:00\t500\t600\t400\t450\t1\t2\t95.0\t110.5")
    write_tsv(tmp_path / "builtin" / "train_student.tsv", "30.0\t0:00:30\t500\t600\t400\t450\t1\t2\t90.0\tNA",
              "10.0\t0:00:10\t500\t600\t400\t450\t1\t2\t90.0\t20.0")  # two repeats: the mean
    write_tsv(tmp_path / "builtin" / "finetune.tsv", "20.0\t0:00:20\t500\t600\t400\t450\t1\t2\t80.0\t30.0")
    write_tsv(tmp_path / "other" / "empty.tsv")
    p = pipeline_times(tmp_path)
    assert list(p["scenes"]) == ["builtin"]
    scene = p["scenes"]["builtin"]
    rules = {r["rule"]: r for r in scene["rules"]}
    assert rules["train_student"]["seconds"] == 20.0 and rules["train_student"]["cpu_seconds"] == 20.0
    assert scene["total_seconds"] == 100.0 and scene["student_share"] == pytest.approx(0.4)
    assert sum(r["share"] for r in scene["rules"]) == pytest.approx(1.0)
    assert read_benchmark(tmp_path / "builtin" / "train_teacher.tsv")["mean_load"] == 95.0


def test_teacher_sizes_come_from_the_config_files():
    grid = teacher_config("grid", None, torch.device("cpu"), "fp32")
    assert grid.grid.resolution_init == grid.grid.resolution and grid.grid.upsample_steps == []
    assert grid.grid.density_activation == "softplus"  # resolved for a Blender scene
    nerf = teacher_config("nerf", "paper.yaml", torch.device("cpu"), "bf16")
    assert (nerf.nerf.width, nerf.nerf.n_coarse, nerf.nerf.n_fine, nerf.precision) == (256, 64, 128, "bf16")


def test_frame_rays_spread_over_the_frame():
    rays_o, rays_d = frame_rays(1000)
    assert rays_o.shape == rays_d.shape == (1000, 3)
    assert rays_d[:, 1].max() > 0.3 and rays_d[:, 1].min() < -0.3  # top and bottom rows, not the first rows only
    assert frame_rays(10**6)[0].shape[0] == FRAME_SIDE**2


@pytest.mark.parametrize("mode", ["full", "quick", "smoke"])
def test_settings_are_positive(mode):
    for device in ("cpu", "cuda"):
        s = settings_for(torch.device(device), mode)
        assert s.matmul_n > 0 and s.render_rays > 0 and s.pseudo_views > 0 and min(s.batch_rays.values()) > 0
        assert set(s.batch_rays) == set(STUDENTS)  # every student timed has a batch, the grid student's too
        assert min(s.teacher_render_rays.values()) > 0 and all(b is None or b > 0 for b in s.teacher_batch.values())


@NEEDS_CXX
def test_compiled_render_row():
    """The compiled render of a tiny student: it compiled (no fallback), and the table prints its row and first call."""
    s = settings_for(torch.device("cpu"), "smoke")
    assert s.compile_networks == () and settings_for(torch.device("cpu"), "quick").compile_networks == (
        "default 12x128",) and len(settings_for(torch.device("cuda"), "full").compile_networks) == 2
    net = R2LNetConfig(n_points=4, n_freqs=2, depth=4, width=8)
    row = bench_render_compiled("tiny 4x8", net, "fp32", s, {"fp32": 1e9})
    assert row["compiled"] is True and row["first_call_s"] > 0 and row["rays_timed"] == s.render_rays
    assert row["flops_per_s"] == pytest.approx(2 * (60 * 8 + 8 * 8 * 2 + 8 * 3) * row["rays_per_s"])
    lines = format_table({"device": "cpu", "device_name": "x", "torch": "t", "mode": "smoke", "date": "d",
                          "matmul_n": 64, "peak_flops_per_s": {"fp32": 1e9}, "train_method": "m",
                          "load_average": {"before": 0.0, "after": 0.0}, "threads": 1, "student_training": [],
                          "student_loop": [], "student_render": [], "student_render_compiled": [row],
                          "teacher_training": [], "teacher_render": [], "student_speedup": [], "pseudo_data": [],
                          "pipeline": None, "notes": []}).splitlines()
    assert any(line.startswith("compiled render") and "tiny 4x8" in line for line in lines)
    assert any(line.startswith("  tiny 4x8 (fp32): first call") for line in lines)


def test_speedups_pair_students_with_their_teachers():
    students = [{"network": "default 12x128", "precision": "fp32", "ms_per_frame": 10.0},
                {"network": "paper 88x256", "precision": "fp32", "ms_per_frame": 100.0}]
    teachers = [{"teacher": "grid config.yaml", "precision": "fp32", "ms_per_frame": 50.0},
                {"teacher": "nerf paper.yaml", "precision": "fp32", "ms_per_frame": 3000.0},
                {"teacher": "nerf paper.yaml", "precision": "bf16", "ms_per_frame": 1000.0}]
    got = {(x["student"], x["teacher"]): x["speedup"] for x in speedups(students, teachers)}
    assert got == {("default 12x128", "grid config.yaml"): 5.0, ("paper 88x256", "nerf paper.yaml"): 30.0}


def test_grid_student_flops_are_its_mlp_and_lookups():
    """The bench's closed form of the default grid student equals what evaluation counts on its real forward pass
    (the MLP's matrix products traced, plus the lookups its meta states)."""
    cfg = GRID_NETWORKS["grid default"]
    assert cfg == GridStudentConfig() and torch.equal(GRID_BOX, torch.tensor([[-1.5] * 3, [1.5] * 3]))
    w = cfg.mlp_width
    mlp = 2 * (cfg.in_dim * w + (cfg.mlp_depth - 1) * w * w + w * 3)
    assert network_flops(cfg) == mlp + grid_student_lookup_flops(cfg)
    torch.manual_seed(0)
    net = build_student_net(cfg)
    assert isinstance(net, GridStudentNet) and torch.equal(net.box, GRID_BOX)
    student = Student(net, 2.0, 6.0, meta={"lookup_flops_per_ray": grid_student_lookup_flops(cfg)})
    assert flops_per_ray(student, *frame_rays(64)) == pytest.approx(network_flops(cfg))
    r2l = STUDENTS["default 12x128"]
    assert network_flops(r2l) == student_closed_form_flops(r2l)


def test_grid_student_rows(monkeypatch):
    """A small grid student's training step (its parameters move) and render at smoke settings, and their rows."""
    import r2l.bench as bench

    cfg = GridStudentConfig(n_points=8, geometry_resolution=16, n_fine=2, resolutions=(8, 16), channels=3,
                            mlp_width=16)
    s = settings_for(torch.device("cpu"), "smoke")
    s.batch_rays["tiny grid"] = 32
    built = []
    monkeypatch.setattr(bench, "build_student_net", lambda net: built.append(build_student_net(net)) or built[-1])
    train = bench_training("tiny grid", cfg, "fp32", s, {"fp32": 1e9})
    assert built[0].geometry.abs().max() > 0  # the step trained the logit grid (it starts at zero)
    assert train["rays_per_step"] == 32 + round(0.2 * 32) and train["flops_note"] == GRID_FLOPS_NOTE
    assert train["rays_per_s"] > 0
    assert train["flops_per_s"] == pytest.approx(3 * network_flops(cfg) * train["rays_per_s"])
    render = bench_render("tiny grid", cfg, "fp32", s, {"fp32": 1e9})
    assert render["rays_timed"] == s.render_rays and render["ms_per_frame"] > 0
    assert render["flops_per_s"] == pytest.approx(network_flops(cfg) * render["rays_per_s"])
    r = {"device": "cpu", "device_name": "x", "torch": "t", "mode": "smoke", "date": "d", "matmul_n": 64,
         "peak_flops_per_s": {"fp32": 1e9}, "train_method": "m", "grid_flops_note": GRID_FLOPS_NOTE,
         "load_average": {"before": 0.0, "after": 0.0}, "threads": 1, "student_training": [train], "student_loop": [],
         "student_render": [render], "student_render_compiled": [], "teacher_training": [], "teacher_render": [],
         "student_speedup": [], "pseudo_data": [], "pipeline": None, "notes": []}
    lines = format_table(r).splitlines()
    assert GRID_FLOPS_NOTE in lines
    assert any(line.startswith("student train") and "tiny grid" in line for line in lines)
    assert any(line.startswith("student render") and "tiny grid" in line for line in lines)


def test_gpu_targets_verdicts():
    gpu_check = load_script("gpu_check")
    bench = {"student_training": [{"network": "paper 88x256", "fraction_of_peak": 0.3},
                                  {"network": "paper 88x256", "fraction_of_peak": 0.6}],
             "student_render": [{"network": "paper 88x256", "ms_per_frame": 7.0, "fraction_of_peak": 0.2}],
             "pseudo_data": []}
    got = [(t["measured"], t["met"]) for t in gpu_check.targets(bench)]
    assert got == [(0.6, True), (None, None), (7.0, False), (0.2, False), (None, None)]


def test_prepare_data_keeps_the_first_views(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    for split, n in (("train", 2), ("val", 3), ("test", 3)):
        (src / split).mkdir(parents=True)
        frames = [{"file_path": f"./{split}/r_{i}", "transform_matrix": []} for i in range(n)]
        (src / f"transforms_{split}.json").write_text(json.dumps({"camera_angle_x": 0.69, "frames": frames}))
        for i in range(n):
            (src / split / f"r_{i}.png").write_bytes(b"png")
    load_script("gpu_check").prepare_data(src, dst, 2)
    assert len(json.loads((dst / "transforms_test.json").read_text())["frames"]) == 2
    assert sorted(p.name for p in (dst / "val").iterdir()) == ["r_0.png", "r_1.png"]
    assert len(list((dst / "train").iterdir())) == 2


def positive_finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_gpu_check_dry_run_runs_every_step(tmp_path):
    """The GPU check on the CPU at toy sizes: every step exits 0 and writes what the GPU run would."""
    out = tmp_path / "out"
    cmd = [sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--dry-run", "--out", str(out),
           "--work", str(tmp_path / "work")]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT, check=False)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    summary = json.loads((out / "gpu_check.json").read_text())
    assert list(summary["steps"]) == ["install", "tests", "bench", "paper_run"]
    assert all(step["rc"] == 0 for step in summary["steps"].values())
    assert sorted(p.name for p in out.iterdir()) == ["bench.json", "check.log", "gpu_check.json", "paper_run.json"]
    bench = json.loads((out / "bench.json").read_text())
    assert bench["mode"] == "smoke" and positive_finite(bench["peak_flops_per_s"]["fp32"])
    for section in ("student_training", "student_render"):  # the grid student beside the R2L MLPs
        assert [r["network"] for r in bench[section]] == ["default 12x128", "paper 88x256", "grid default"]
        assert bench[section][-1]["flops_note"] == bench["grid_flops_note"] and positive_finite(
            bench[section][-1]["rays_per_s"])
    assert {r["teacher"] for r in bench["teacher_render"]} == {"grid config.yaml", "nerf config.yaml",
                                                               "nerf paper.yaml", "grid lego_fast.yaml"}
    paper = json.loads((out / "paper_run.json").read_text())
    assert [p["step"] for p in paper["teacher"]] == [2, 4] and [p["step"] for p in paper["student"]] == [0, 2, 4]
    assert paper["pseudo"]["views"] == 2 and all(positive_finite(p["test_psnr"]) for p in paper["student"])
    assert "8 passed" in (out / "check.log").read_text()  # the CUDA tests ran, on the CPU
