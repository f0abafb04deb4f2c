"""The ``r2l`` command: help, ``info``, ``render`` (cross-checked against the model's own rays), one-line
errors, ``run -n`` through Snakemake, and ``bench --quick`` (values checked for being positive, never timed)."""

import dataclasses
import json
import math
import pickle
import sys
from pathlib import Path
from types import SimpleNamespace

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from helpers import (
    DEFAULT_CONFIG,
    GRID_16,
    ROOT,
    TEST_CONFIG,
    TINY_GRID_NET,
    TINY_NET,
    quick_grid_teacher,
    run_r2l,
    save_student_file,
    student_net,
)

from r2l.cli import main, size_at_width, snakemake_command
from r2l.core.checkpoint import atomic_torch_save
from r2l.core.errors import R2LError
from r2l.core.imageio import to_uint8
from r2l.data.builtin import write_blender, write_llff
from r2l.data.registry import load_scene
from r2l.models.gridstudent import grid_student_lookup_flops
from r2l.models.load import load_model, model_camera
from r2l.models.r2lnet import R2LNet
from r2l.stages.student import DistillConfig
from r2l.stages.teacher import train_teacher

pytestmark = pytest.mark.usefixtures("quiet_logging")


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory) -> Path:
    return write_blender(tmp_path_factory.mktemp("scene") / "builtin", seed=0, resolution=16, n_train=4, n_val=1,
                         n_test=1, spp=1)


@pytest.fixture(scope="module")
def scene(scene_dir):
    return load_scene("builtin", scene_dir)


@pytest.fixture(scope="module")
def ff_scene(tmp_path_factory):
    path = write_llff(tmp_path_factory.mktemp("ff") / "builtin_ff", seed=1, width=16, height=12, n_views=8, spp=1)
    return load_scene("llff", path)


@pytest.fixture(scope="module")
def teacher(scene, tmp_path_factory):
    """A grid teacher trained for 2 steps (the pipeline's own teacher file)."""
    d = tmp_path_factory.mktemp("teacher")
    cfg = quick_grid_teacher({"grid": {**GRID_16, "occupancy_warmup": 100}})
    train_teacher(scene, cfg, d / "teacher.pt", d / "resume")
    return d / "teacher.pt"


def student_file(path: Path, scene, kind: str = "student", family: str = "r2l") -> Path:
    """A student file with the keys r2l.stages.student writes; ``scene`` None: a file of r2l 0.1 (no camera).
    family: ``r2l`` (TINY_NET) or ``grid`` (TINY_GRID_NET over the +-1.5 box)."""
    torch.manual_seed(0)
    net, config = student_net(family)
    return save_student_file(path, net, config, scene, step=40, kind=kind, metrics={
        "val_psnr": 12.5, "train_seconds": 3.0, "device": "cpu", "device_name": "cpu"})


@pytest.fixture(scope="module")
def students(scene, ff_scene, tmp_path_factory):
    d = tmp_path_factory.mktemp("students")
    return {"orbit": student_file(d / "student.pt", scene), "ndc": student_file(d / "ff.pt", ff_scene, "finetuned"),
            "old": student_file(d / "old.pt", None), "grid": student_file(d / "grid.pt", scene, family="grid")}


def run_main(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


# ----------------------------------------------------------------------------- help and info


@pytest.mark.parametrize("command", [[], ["run"], ["info"], ["render"], ["bench"]])
def test_help(command):
    result = run_r2l(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: r2l {' '.join(command)}".rstrip())


def test_info_teacher(teacher, capsys):
    code, out, _ = run_main(capsys, "info", teacher)
    assert code == 0
    lines = dict(line.split(None, 1) for line in out.splitlines() if not line.startswith((" ", "val ", "file ")))
    assert lines["kind"] == "teacher (grid)" and lines["step"] == "2" and lines["scene"].startswith("builtin ")
    assert "16 x 16" in lines["scene"] and "orbit path" in lines["scene"]
    assert lines["precision"] == "fp32"  # the training precision the teacher file records
    code, out, _ = run_main(capsys, "info", "--json", teacher)
    d = json.loads(out)
    assert d["kind"] == "grid" and d["role"] == "teacher" and d["step"] == 2 and d["scene"]["name"] == "builtin"
    assert d["network"]["n_samples"] == 24 and d["device"] == "cpu"


def test_info_students(students, capsys):
    code, out, _ = run_main(capsys, "info", "--json", students["ndc"])
    d = json.loads(out)
    assert code == 0 and d["kind"] == "finetuned" and d["step"] == 40 and d["val_psnr"] == 12.5
    assert d["scene"]["name"] == "builtin_ff" and d["scene"]["ndc"] is True and d["network"]["depth"] == 4
    assert d["mflops_per_ray"] == pytest.approx(2 * (3 * 8 * 9 * 16 + 2 * 16 * 16 + 16 * 3) / 1e6)
    assert d["family"] == "r2l"
    code, out, _ = run_main(capsys, "info", students["old"])
    assert code == 0 and "student" in out and "scene      not recorded" in out
    assert "family     r2l (the paper's residual MLP)" in out  # a file without a family: the R2L MLP


def test_info_grid_student(students, teacher, capsys):
    code, out, _ = run_main(capsys, "info", students["grid"])
    assert code == 0
    lines = dict(line.split(None, 1) for line in out.splitlines() if not line.startswith((" ", "val ", "file ")))
    assert lines["kind"] == "student" and lines["family"] == "grid (grid-feature light field)"
    flat = " ".join(line.strip() for line in out.splitlines())  # (long lines are wrapped)
    assert "geometry_resolution 16" in flat and "its feature lookups counted in closed form" in flat
    code, out, _ = run_main(capsys, "info", "--json", students["grid"])
    d = json.loads(out)
    assert d["family"] == "grid" and d["network"]["n_fine"] == 2 and d["network"]["resolutions"] == [8, 16]
    w, in_dim = TINY_GRID_NET.mlp_width, TINY_GRID_NET.in_dim
    mlp = 2 * (in_dim * w + (TINY_GRID_NET.mlp_depth - 1) * w * w + w * 3)
    assert d["mflops_per_ray"] == pytest.approx((mlp + grid_student_lookup_flops(TINY_GRID_NET)) / 1e6)
    code, out, _ = run_main(capsys, "info", teacher)
    assert code == 0 and "family" not in out  # a teacher has no student family


def test_load_model_picks_the_renderer(teacher, students):
    t, old = load_model(teacher, "cpu"), load_model(students["old"], "cpu")
    assert type(t).__name__ == "Teacher" and type(old).__name__ == "Student"
    assert model_camera(t)["H"] == 16 and len(model_camera(t)["render_poses"]) > 0
    assert model_camera(old) is None and model_camera(load_model(students["ndc"], "cpu"))["ndc"] is True


# ----------------------------------------------------------------------------- render


def expected_image(model_path: Path, camera_scene, pose: np.ndarray, width: int) -> np.ndarray:
    """What the model's own ``render_rays`` gives on the rays of ``pose`` at ``width`` (aspect kept), as uint8."""
    model = load_model(model_path, "cpu")
    H = round(width * camera_scene.H / camera_scene.W)
    rays = camera_scene.rays(pose, H, width, camera_scene.focal * width / camera_scene.W)
    return to_uint8(model.render_rays(*rays).reshape(H, width, 3).numpy())


@pytest.mark.parametrize("which", ["teacher", "orbit", "ndc", "grid"])
def test_render_pose_matches_render_rays(which, teacher, students, scene, ff_scene, tmp_path, capsys):
    path = teacher if which == "teacher" else students[which]
    cam_scene = ff_scene if which == "ndc" else scene
    pose = cam_scene.poses[-1]
    np.savetxt(tmp_path / "pose.txt", pose[:3])  # a 3x4 matrix in a text file
    code, _, err = run_main(capsys, "render", path, "--pose", tmp_path / "pose.txt", "--out", tmp_path / "v.png",
                            "--width", 8, "--device", "cpu")
    assert code == 0, err
    img = iio.imread(tmp_path / "v.png")
    want = expected_image(path, cam_scene, pose, 8)
    assert img.shape == want.shape == (round(8 * cam_scene.H / cam_scene.W), 8, 3)
    assert np.abs(img.astype(int) - want.astype(int)).max() <= 1
    assert want.std() > 0  # a real image, not a constant


def test_render_pose_formats(students, scene, tmp_path, capsys):
    pose = scene.poses[0]
    np.save(tmp_path / "pose.npy", pose)
    (tmp_path / "pose.json").write_text(json.dumps(pose.tolist()))
    for name in ("pose.npy", "pose.json"):
        code, _, err = run_main(capsys, "render", students["orbit"], "--pose", tmp_path / name, "--out",
                                tmp_path / f"{name}.png", "--device", "cpu")
        assert code == 0, err
        assert iio.imread(tmp_path / f"{name}.png").shape == (16, 16, 3)


def n_frames(path: Path) -> int:
    return len(iio.imread(path, index=None))


def test_render_path_writes_the_requested_frames(teacher, students, tmp_path, capsys):
    code, out, err = run_main(capsys, "render", teacher, "--path", "orbit", "--frames", 5, "--out",
                              tmp_path / "video.mp4", "--width", 8, "--fps", 10, "--device", "cpu")
    assert code == 0, err
    written = tmp_path / "video.mp4"
    assert str(written) in out and n_frames(written) == 5
    code, _, err = run_main(capsys, "render", students["ndc"], "--path", "spiral", "--frames", 3, "--out",
                            tmp_path / "ff.mp4", "--device", "cpu")
    assert code == 0, err
    written = tmp_path / "ff.mp4"
    assert iio.imread(written, index=0).shape[:2] == (12, 16)  # the scene's size
    assert n_frames(written) == 3
    code, out, err = run_main(capsys, "render", students["grid"], "--path", "orbit", "--frames", 4, "--out",
                              tmp_path / "grid.mp4", "--width", 8, "--device", "cpu")  # a grid student, unchanged
    assert code == 0, err
    written = tmp_path / "grid.mp4"
    assert str(written) in out and iio.imread(written, index=0).shape[:2] == (8, 8)


def test_render_with_scene_folder_for_a_file_without_camera(students, scene, scene_dir, tmp_path, capsys):
    np.savetxt(tmp_path / "pose.txt", scene.poses[0])
    code, _, err = run_main(capsys, "render", students["old"], "--pose", tmp_path / "pose.txt", "--out",
                            tmp_path / "old.png", "--scene", scene_dir, "--format", "builtin", "--device", "cpu")
    assert code == 0, err
    assert np.array_equal(iio.imread(tmp_path / "old.png"), expected_image(students["old"], scene, scene.poses[0], 16))


# ----------------------------------------------------------------------------- errors


def test_bad_inputs_give_one_line(teacher, students, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not a model\n")
    np.savetxt(tmp_path / "small.txt", np.eye(2))
    (tmp_path / "bad.json").write_text("[[1, 2], [3")
    np.savetxt(tmp_path / "pose.txt", np.eye(4))
    out_png = ["--out", tmp_path / "x.png"]
    pose = ["--pose", tmp_path / "pose.txt", *out_png]
    cases = [
        (["info", tmp_path / "missing.pt"], "missing.pt: model file not found"),
        (["info", tmp_path / "notes.txt"], "notes.txt: not a torch file (a CSV/text file?)"),
        (["render", teacher, "--pose", tmp_path / "small.txt", *out_png], "small.txt: a pose must"),
        (["render", teacher, "--pose", tmp_path / "bad.json", *out_png], "bad.json: unreadable pose"),
        (["render", teacher, "--pose", tmp_path / "nope.txt", *out_png], "nope.txt: pose file not found"),
        (["render", teacher, "--path", "spiral", "--out", tmp_path / "v.mp4"], "has an orbit path, not spiral"),
        (["render", students["ndc"], "--path", "orbit", "--out", tmp_path / "v.mp4"], "use --path spiral"),
        (["render", students["old"], "--path", "orbit", "--out", tmp_path / "v.mp4"], "--scene DIR --format"),
        (["render", teacher, "--path", "orbit", "--frames", 10**6, "--out", tmp_path / "v.mp4"], "--frames 1000000"),
        (["render", teacher, *pose[:2], "--out", tmp_path / "x.mp4"], "must end in .png"),
        (["render", teacher, *pose, "--width", 0], "positive integer"),
        (["render", teacher, "--out", tmp_path / "x.png"], "one of the arguments --path --pose is required"),
        (["info"], "the following arguments are required: MODEL"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ]
    for args, message in cases:
        code, out, err = run_main(capsys, *args)
        assert code == 1, (args, out, err)
        assert len(err.strip().splitlines()) == 1 and message in err and "Traceback" not in err, (args, err)
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "v.mp4").exists()


def test_error_from_the_installed_command_is_one_line(tmp_path):
    (tmp_path / "notes.txt").write_text("not a model\n")
    result = run_r2l("info", str(tmp_path / "notes.txt"))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    want = f"r2l: error: {tmp_path / 'notes.txt'}: not a torch file (a CSV/text file?)"
    assert result.stderr.strip().splitlines() == [want]
    with open(tmp_path / "data.pkl", "wb") as f:  # torch warns of its pickle protocol when it reads it
        pickle.dump({"weights": np.zeros(3)}, f, protocol=4)
    result = run_r2l("info", str(tmp_path / "data.pkl"))
    assert result.returncode == 1 and result.stderr.strip().splitlines() == [
        f"r2l: error: {tmp_path / 'data.pkl'}: a pickle that is not a plain torch.save of tensors (refused by "
        "weights_only loading)"]


def student_checkpoint(path: Path, base_step: int, kind: str | None = None) -> Path:
    """A student's resume checkpoint in the layout of every stage (format 3, r2l.core.checkpoint.CHECKPOINT_KEYS) of
    ``kind``; None: the student layout of formats 1 and 2 without ``format_version`` (format 1; ``base_step`` > 0:
    finetuning)."""
    net = R2LNet(TINY_NET)
    optimizer = torch.optim.Adam(net.parameters())
    common = {"weights": net.state_dict(), "optimizer": optimizer.state_dict(),
              "config": dataclasses.asdict(DistillConfig(network=TINY_NET)), "rng": {"batch": torch.zeros(2)}}
    loop = {"base_step": base_step, "train_seconds": 1.0, "init_seconds": 0.0, "val_history": [], "curve": []}
    if kind is None:
        ckpt = {**common, "loop": {**loop, "step": base_step + 10, "history": []}, "best": {}, "pool": None}
    else:
        ckpt = {"stage": "student", "kind": kind, "step": base_step + 10, **common, "history": [],
                "loop": {**loop, "best": {}}, "extra": {"pool": None}, "format_version": 3}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(ckpt, path)
    return path


def test_info_says_what_a_file_that_is_no_model_is(teacher, tmp_path, capsys):
    (tmp_path / "history.csv").write_text("step,loss,psnr\n0,0.1,12.0\n100,0.05,15.5\n")
    (tmp_path / "empty.pt").write_bytes(b"")
    torch.save(torch.nn.Linear(2, 2), tmp_path / "module.pt")  # a whole module: refused by weights_only
    torch.save([1, 2], tmp_path / "list.pt")
    np.savez(tmp_path / "arrays.npz", x=np.zeros(3))
    resume = tmp_path / "resources" / "resume" / "lego"
    (teacher_ckpt,) = sorted((teacher.parent / "resume").glob("ckpt_*.pt"))  # what train_teacher wrote
    cases = [
        (tmp_path / "history.csv", "not a torch file (a CSV/text file?)"),
        (tmp_path / "empty.pt", "an empty file, not a model file"),
        (tmp_path / "module.pt", "a pickle that is not a plain torch.save of tensors (refused by weights_only "
                                 "loading)"),
        (tmp_path / "list.pt", "a torch file holding a list, not an r2l model file"),
        (tmp_path / "arrays.npz", "not a torch file (a zip archive: a NumPy .npz)"),
        (teacher_ckpt, "a training checkpoint (resume point, format 3) of a grid teacher at step 2, not a model "
                       "file; the model is results/{scene}/teacher/model.pt (written when the training ends)"),
        (student_checkpoint(resume / "student" / "ckpt_000000010.pt", 0, "student"), "a training checkpoint "
         "(resume point, format 3) of a student's distillation at step 10, not a model file; the model is "
         "results/lego/student/model.pt"),
        (student_checkpoint(resume / "finetune" / "ckpt_000000050.pt", 40, "finetuned"), "(resume point, format 3) "
         "of a student's finetuning at step 50, not a model file; the model is results/lego/finetuned/model.pt"),
        (student_checkpoint(tmp_path / "old" / "ckpt_000000050.pt", 40), "(resume point, format 1) of a student's "
         "finetuning at step 50, not a model file; the model is results/{scene}/finetuned/model.pt"),
    ]
    for path, message in cases:
        code, out, err = run_main(capsys, "info", path)
        assert code == 1 and out == "", (path, err)
        assert err.strip().splitlines() == [err.strip()] and f"r2l: error: {path}: " in err and message in err, err


def test_render_unwritable_out_or_huge_size_gives_one_line(teacher, tmp_path, capsys):
    np.savetxt(tmp_path / "pose.txt", np.eye(4))
    (tmp_path / "good.png").write_bytes(b"an existing file")
    pose = ["render", teacher, "--pose", tmp_path / "pose.txt", "--device", "cpu"]
    cases = [
        ([*pose, "--out", tmp_path / "good.png" / "x.png"], f"{tmp_path / 'good.png'} is a file, not a folder"),
        ([*pose, "--out", tmp_path / "good.png" / "sub" / "x.png"], f"{tmp_path / 'good.png'} is a file"),
        (["render", teacher, "--path", "orbit", "--out", tmp_path / "good.png" / "v.mp4"], "is a file, not a folder"),
        ([*pose, "--out", "/proc/x.png"], "--out /proc/x.png: cannot write in /proc"),
        ([*pose, "--out", tmp_path / "x.png", "--width", 100000], "at most 16384 per side"),
    ]
    for args, message in cases:
        code, out, err = run_main(capsys, *args)
        assert code == 1, (args, out, err)
        assert len(err.strip().splitlines()) == 1 and message in err and "Traceback" not in err, (args, err)
    assert (tmp_path / "good.png").read_bytes() == b"an existing file" and not (tmp_path / "x.png").exists()


def test_render_size_limit_applies_to_the_height_too():
    tall = SimpleNamespace(H=4000, W=100)
    assert size_at_width(tall, 400) == (16000, 400) and size_at_width(tall, None) == (4000, 100)
    with pytest.raises(R2LError, match=r"a 500 x 20000 image is too large: at most 16384 pixels per side"):
        size_at_width(tall, 500)


# ----------------------------------------------------------------------------- run and bench


def test_snakemake_command_adds_defaults_only_when_missing():
    cmd = snakemake_command(["-n"])
    assert cmd[:3] == [sys.executable, "-m", "snakemake"] and cmd[3:5] == ["--snakefile", str(ROOT / "Snakefile")]
    assert cmd[5:] == ["-n", "--cores", "1", "--resources", "gpu=1"]
    assert snakemake_command(["--", "-s", "S", "-c4"])[3:] == ["-s", "S", "-c4", "--resources", "gpu=1"]
    prof = snakemake_command(["--profile", "profiles/slurm", "-s", "S"])
    assert prof[3:] == ["--profile", "profiles/slurm", "-s", "S"]  # a profile sets jobs and resources itself
    assert snakemake_command(["--snakefile=S", "--resources", "gpu=2", "--cores=3"])[3:] == [
        "--snakefile=S", "--resources", "gpu=2", "--cores=3"]


def test_run_dry_run_plans_the_jobs(tmp_path):
    result = run_r2l("run", "-n", "--configfile", str(TEST_CONFIG), "--directory", str(tmp_path))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "train_teacher" in result.stdout and "dry-run" in result.stdout
    assert not (tmp_path / "results").exists()


def test_bench_writes_json(tmp_path, capsys):
    """``--smoke`` runs every measurement once at toy sizes; only the structure is checked, never a time."""
    bench_dir = tmp_path / "benchmarks" / "builtin"
    bench_dir.mkdir(parents=True)
    (bench_dir / "train_student.tsv").write_text("s\th:m:s\tcpu_time\n55.0\t0:00:55\t100.0\n")
    code, out, err = run_main(capsys, "bench", "--smoke", "--device", "cpu", "--json", tmp_path / "out.json",
                              "--pipeline-benchmarks", tmp_path / "benchmarks")
    assert code == 0, err
    for line in ("student train", "student loop", "student render", "teacher train", "teacher render", "speed-up",
                 "pseudo-data", "train_student", "1008x756 -> 126x94", "800x800 -> 300x300"):
        assert line in out
    r = json.loads((tmp_path / "out.json").read_text())
    assert [(x["from"], x["to"]) for x in r["resize"]] == [([756, 1008], [94, 126]), ([378, 504], [47, 63]),
                                                           ([800, 800], [300, 300])]
    assert all(x["ms"] > 0 and math.isfinite(x["ms"]) for x in r["resize"])
    assert r["peak_flops_per_s"]["fp32"] > 0 and math.isfinite(r["peak_flops_per_s"]["fp32"])
    rows = r["student_training"] + r["student_loop"] + r["student_render"]
    assert {row["network"] for row in rows} == {"default 12x128", "paper 88x256", "grid default"}
    assert {row["network"] for row in r["student_loop"]} == {"default 12x128", "paper 88x256"}  # the grid: no loop
    assert "grid default" in out and "lookups counted in closed form" in out
    teachers = r["teacher_training"] + r["teacher_render"]
    assert {row["teacher"] for row in teachers} == {"grid config.yaml", "nerf config.yaml", "nerf paper.yaml",
                                                    "grid lego_fast.yaml"}
    assert {x["teacher"] for x in r["pseudo_data"]} == {"grid config.yaml", "grid lego_fast.yaml"}
    assert len(r["student_speedup"]) == 4
    numbers = ["rays_per_s", "ms_per_frame", "flops_per_s", "fraction_of_peak", "speedup", "views_per_s",
               "teacher_render_share"]
    for row in rows + teachers + r["student_speedup"] + r["pseudo_data"]:
        for key in numbers:
            if row.get(key) is not None:  # None: no FLOP count (grid teachers)
                assert row[key] > 0 and math.isfinite(row[key]), (row, key)
    assert all(row["flops_per_s"] is None for row in teachers if row["teacher"].startswith("grid"))
    scene = r["pipeline"]["scenes"]["builtin"]
    assert scene["total_seconds"] == 55.0 and scene["student_share"] == 1.0
    code, _, err = run_main(capsys, "bench", "--smoke", "--pipeline-benchmarks", tmp_path / "missing")
    assert code == 1 and "no such folder" in err
    code, out, err = run_main(capsys, "bench", "--pipeline-only", "--pipeline-benchmarks", tmp_path / "benchmarks",
                              "--json", tmp_path / "pipeline.json")
    assert code == 0 and "train_student" in out and "matmul" not in out
    assert json.loads((tmp_path / "pipeline.json").read_text())["pipeline"]["scenes"]["builtin"]["student_share"] == 1
    code, _, err = run_main(capsys, "bench", "--pipeline-only")
    assert code == 1 and "--pipeline-benchmarks" in err


def test_run_names_a_missing_or_broken_configfile_before_snakemake(tmp_path):
    from r2l.cli import configfiles

    assert configfiles(["-n", "--configfile", "a.yaml", "b.yaml", "--cores", "2", "--configfile=c.yaml"]) == [
        "a.yaml", "b.yaml", "c.yaml"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("teacher:\n  steps: [1, 2\n  lr: 3\n")
    out = run_r2l("run", "-n", "--configfile", str(bad))
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert f"{bad}: line 3, column 5: not valid YAML" in out.stderr
    missing = tmp_path / "nothere.yaml"
    out = run_r2l("run", "-n", "--configfile", str(missing))
    assert out.returncode == 1 and f"{missing}: config file not found" in out.stderr.strip().splitlines()[-1]


def test_run_names_a_target_read_as_a_configfile(tmp_path):
    """``--configfile config.yaml results/.../model.pt``: the target is read as a config file; say so."""
    model = tmp_path / "model.pt"
    model.write_bytes(b"PK\x03\x04")
    for target in (model, tmp_path / "results" / "builtin" / "metrics.csv"):
        out = run_r2l("run", "-n", "--configfile", str(DEFAULT_CONFIG), str(target))
        last = out.stderr.strip().splitlines()[-1]
        assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
        assert f"{target}: " in last and "a target placed there is read as a config file" in last, last


def test_info_scene_line_names_the_scene_kind():
    """r2l info's scene line says object-centric, forward-facing or unbounded, with the path --path accepts."""
    from r2l.cli import _scene_line

    base = {"name": "s", "format": "photos", "H": 40, "W": 60, "focal": 50.0, "render_poses": 12}
    assert _scene_line(base) == ("s (photos format), 40 x 60, focal 50.00 px, ndc no "
                                 "(object-centric; orbit path of 12 poses)")
    assert _scene_line({**base, "ndc": True}).endswith("ndc yes (forward-facing, NDC; spiral path of 12 poses)")
    assert _scene_line({**base, "unbounded": True}).endswith(
        "ndc no (unbounded walk-around, contracted; orbit path of 12 poses)")
