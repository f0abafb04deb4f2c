"""The glue between Snakemake and the package: resume folders that never resume stale weights; the conda route."""

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

from r2l.workflow import prepare_resume_dir

from helpers import ROOT, TEST_CONFIG, default_config, job_counts, run_snakemake


def make_ckpts(folder, n=2):
    for i in range(n):
        (folder / f"ckpt_{i:09d}.pt").write_bytes(b"x")


def ckpts(folder):
    return sorted(p.name for p in folder.glob("ckpt_*.pt"))


def test_resume_dir_keeps_checkpoints_for_more_steps_and_drops_them_on_other_changes(tmp_path, caplog):
    resume = tmp_path / "resume"
    resume.mkdir()
    data = tmp_path / "meta.json"
    data.write_text('{"views": 10}')
    base = {"student": {"steps": 100, "lr": 5e-4, "val_every": 10}, "scene": {"resolution": 64}}
    prepare_resume_dir(resume, base, [data])
    make_ckpts(resume)
    longer = {"student": {"steps": 500, "lr": 5e-4, "val_every": 50}, "scene": {"resolution": 64}}
    prepare_resume_dir(resume, longer, [data])
    assert ckpts(resume) == ["ckpt_000000000.pt", "ckpt_000000001.pt"]  # more steps: the run continues

    other_lr = {"student": {"steps": 500, "lr": 1e-3, "val_every": 50}, "scene": {"resolution": 64}}
    with caplog.at_level(logging.WARNING, logger="r2l"):
        prepare_resume_dir(resume, other_lr, [data])
    assert ckpts(resume) == [] and "2 checkpoints removed" in caplog.text

    make_ckpts(resume, 1)
    data.write_text('{"views": 20}')  # new pseudo-data: the old weights must not be resumed
    prepare_resume_dir(resume, other_lr, [data])
    assert ckpts(resume) == []

    make_ckpts(resume, 1)
    prepare_resume_dir(resume, {**other_lr, "scene": {"resolution": 100}}, [data])
    assert ckpts(resume) == []


def test_checkpoints_of_unknown_origin_are_not_resumed(tmp_path):
    resume = tmp_path / "resume"
    resume.mkdir()
    make_ckpts(resume)  # left by a run that recorded no identity
    prepare_resume_dir(resume, {"teacher": {"steps": 10}}, [])
    assert ckpts(resume) == [] and (resume / "identity.json").is_file()


# ----------------------------------------------------------------------------- the conda route


def _conda_directives() -> list[tuple[Path, str]]:
    """``(rule file, env path)`` for every ``conda:`` directive of the workflow."""
    found = []
    for smk in sorted((ROOT / "workflow" / "rules").glob("*.smk")):
        lines = smk.read_text().splitlines()
        for i, line in enumerate(lines):
            if line.strip() == "conda:":
                found.append((smk, lines[i + 1].strip().strip('"')))
    return found


def test_every_rule_env_installs_the_running_checkout():
    """Rules name workflow/envs/r2l.yaml, which lists the dependencies only (Snakemake builds envs from its own copy
    of the file, where ``-e .`` would point elsewhere); its post-deploy script, which Snakemake runs in each env it
    builds, installs the checkout the Snakefile names in R2L_CHECKOUT, editable and without dependencies."""
    directives = _conda_directives()
    assert len(directives) >= 12
    for smk, env in directives:
        path = (smk.parent / env).resolve()
        assert path == ROOT / "workflow" / "envs" / "r2l.yaml", (smk, env)
    spec = yaml.safe_load((ROOT / "workflow" / "envs" / "r2l.yaml").read_text())
    deps = [d for d in spec["dependencies"] if isinstance(d, str)]
    pip = [p for d in spec["dependencies"] if isinstance(d, dict) for p in d["pip"]]
    assert {"python", "pytorch", "setuptools", "pip"} <= {re.split(r"[<>=]", d)[0] for d in deps}
    assert not [p for p in pip if p.startswith("-e") or p.strip() in (".", "r2l")]
    deploy = (ROOT / "workflow" / "envs" / "r2l.post-deploy.sh").read_text()
    install = [line for line in deploy.splitlines() if "pip install" in line]
    assert len(install) == 1 and "--no-deps" in install[0] and '--editable "$R2L_CHECKOUT"' in install[0], install
    assert "os.environ.update(R2L_CHECKOUT=workflow.basedir)" in (ROOT / "Snakefile").read_text()
    out = subprocess.run(["bash", str(ROOT / "workflow" / "envs" / "r2l.post-deploy.sh")], capture_output=True,
                         text=True, env={k: v for k, v in os.environ.items() if k != "R2L_CHECKOUT"})
    assert out.returncode != 0 and "R2L_CHECKOUT: is not set" in out.stderr, out.stderr  # installs nothing then
    user_env = yaml.safe_load((ROOT / "environment.yml").read_text())  # the env to run Snakemake from
    assert "-e ." in [p for d in user_env["dependencies"] if isinstance(d, dict) for p in d["pip"]]


SCRIPTS = ROOT / "workflow" / "scripts"


def test_each_rule_runs_the_script_of_its_name():
    """Rule X runs workflow/scripts/X.py, and every script there belongs to a rule."""
    rules = {}
    for smk in sorted((ROOT / "workflow" / "rules").glob("*.smk")):
        for name, body in re.findall(r"^rule (\w+):\n(.*?)(?=^\S|\Z)", smk.read_text(), flags=re.M | re.S):
            script = re.search(r'script:\s*"\.\./scripts/(\w+)\.py"', body)
            rules[name] = script and script.group(1)
    assert rules and all(script == name for name, script in rules.items()), rules
    assert {p.stem for p in SCRIPTS.glob("*.py") if not p.name.startswith("_")} == set(rules)


def test_a_rule_script_needs_r2l_installed_and_says_so_in_one_line(tmp_path):
    """Run a script's first import the way Snakemake does (the script folder appended to sys.path): with r2l
    installed it imports this checkout's package silently; in a Python that sees no installed packages (-S) it
    stops with one line saying how to install it."""
    code = f"import sys; sys.path.append({str(SCRIPTS)!r}); import _require_r2l; import r2l; print(r2l.__file__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0 and out.stderr == "", out.stderr
    assert Path(out.stdout.strip()) == ROOT / "r2l" / "__init__.py"
    out = subprocess.run([sys.executable, "-S", "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 1 and out.stdout == "", out.stdout
    assert out.stderr.count("\n") == 1 and f"install it from the checkout: pip install -e {ROOT}" in out.stderr
    other = tmp_path / "elsewhere" / "r2l"  # an r2l installed from another copy runs, with a warning
    other.mkdir(parents=True)
    (other / "__init__.py").write_text("")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(other.parent)})
    assert out.returncode == 0 and Path(out.stdout.strip()) == other / "__init__.py", out.stderr
    assert f"runs the r2l installed at {other}, not the code of this checkout ({ROOT})" in out.stderr
    scripts = sorted(p for p in SCRIPTS.glob("*.py") if not p.name.startswith("_"))
    first_imports = [next(line for line in p.read_text().splitlines() if line.startswith(("import", "from")))
                     for p in scripts]
    assert all(line.startswith("import _require_r2l") for line in first_imports), dict(zip(scripts, first_imports))
    patching = re.compile(r"sys\.path\.(insert|append|extend)\(|sys\.path\s*\+?=")
    assert not [p.name for p in SCRIPTS.glob("*.py") if patching.search(p.read_text())]  # none patches sys.path


# ----------------------------------------------------------------------------- paths stay inside


class _FakeJob:
    def __init__(self, tmp_path, output):
        self.log = [str(tmp_path / "logs" / "x.log")]
        self.output = [output]
        self.config, self.wildcards = {}, {"scene": "x"}


def test_a_job_never_writes_outside_the_working_directory(tmp_path, monkeypatch):
    from r2l.core.errors import R2LError
    from r2l.workflow import inside_workdir, stage

    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert inside_workdir("results/a/model.pt") == Path("results/a/model.pt")
    for bad in ("../outside.pt", str(tmp_path / "outside.pt"), "results/../../outside.pt"):
        try:
            inside_workdir(bad)
        except R2LError as err:
            assert bad in str(err) and "outside the working directory" in str(err)
        else:
            raise AssertionError(f"{bad} was accepted")
    job = _FakeJob(work, "../escaped/model.pt")
    try:
        with stage(job):
            raise AssertionError("the stage body ran")
    except R2LError:
        pass
    assert not (work / "logs").exists() and not (tmp_path / "escaped").exists()  # nothing was created


# ----------------------------------------------------------------------------- one job per folder


def test_a_folder_lock_refuses_a_second_job_and_dies_with_its_holder(tmp_path):
    import time

    from r2l.core.errors import R2LError
    from r2l.core.lock import FolderLock

    folder = tmp_path / "resume"
    with FolderLock(folder):
        try:
            with FolderLock(folder):
                raise AssertionError("a second lock was granted")
        except R2LError as err:
            assert str(folder) in str(err) and "another r2l job" in str(err) and f"pid {os.getpid()}" in str(err)
    with FolderLock(folder):  # released on exit
        pass
    code = ("import sys, time; from r2l.core.lock import FolderLock; l = FolderLock(sys.argv[1]).__enter__(); "
            "print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        try:
            FolderLock(folder).__enter__()
            raise AssertionError("the lock of a live holder was granted")
        except R2LError:
            pass
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.1)
    with FolderLock(folder):  # a killed holder leaves no lock behind
        pass


def test_locking_a_folder_removes_the_temps_of_killed_writers(tmp_path, monkeypatch):
    from r2l.workflow import Job

    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "resources" / "resume" / "x"
    folder.mkdir(parents=True)
    (folder / ".ckpt_000000500.pt.a1b2c3.tmp").write_bytes(b"x" * 1000)
    (folder / "ckpt_000000400.pt").write_bytes(b"kept")
    job = Job(config={}, scene_name="x", smk=None)
    with job.locks:
        job.lock("resources/resume/x")
        assert sorted(p.name for p in folder.iterdir()) == [".r2l.lock", "ckpt_000000400.pt"]


# ----------------------------------------------------------------------------- data identity


class _Params:
    def __init__(self, resume_dir):
        self.resume_dir = str(resume_dir)


class _Input:
    def __init__(self, scene):
        self.scene = str(scene)


class _Smk:
    def __init__(self, scene_dir, resume_dir):
        self.params, self.input = _Params(resume_dir), _Input(scene_dir)


def _job(config, scene_dir):
    from r2l.workflow import Job

    return Job(config=config, scene_name="toy", smk=_Smk(scene_dir, "resources/resume/toy/teacher"))


def test_changed_scene_bytes_restart_the_teacher_and_are_recorded(tmp_path, monkeypatch, caplog):
    """Replacing an image at the same path changes the scene's digest: the old checkpoints are not resumed."""
    from r2l.data.builtin import write_blender

    monkeypatch.chdir(tmp_path)
    scene_dir = write_blender(tmp_path / "toy", seed=0, resolution=16, n_train=3, n_val=1, n_test=1)
    config = default_config()
    config["scenes"] = {"toy": {"format": "blender", "path": str(scene_dir), "resolution": 16}}
    job = _job(config, scene_dir)
    with job.locks:
        scene = job.scene()
        resume = job.resume_dir(("teacher",))
    assert scene.identity() == {"name": "toy", "format": "blender", "H": 16, "W": 16, "data_sha256": scene.digest}
    make_ckpts(resume)
    job = _job(config, scene_dir)
    with job.locks:
        assert job.scene().digest == scene.digest  # same bytes: same digest, from the cache
        job.resume_dir(("teacher",))
    assert ckpts(resume) == ["ckpt_000000000.pt", "ckpt_000000001.pt"]
    image = sorted((scene_dir / "train").glob("*.png"))[0]
    other = sorted((scene_dir / "train").glob("*.png"))[1]
    image.write_bytes(other.read_bytes())
    job = _job(config, scene_dir)
    with caplog.at_level(logging.WARNING, logger="r2l"), job.locks:
        assert job.scene().digest != scene.digest
        job.resume_dir(("teacher",))
    assert ckpts(resume) == [] and "starting over" in caplog.text


def test_the_digest_cache_skips_unchanged_files_and_rehashes_changed_ones(tmp_path, monkeypatch):
    import r2l.core.digest as digest

    files = [tmp_path / "d" / f"{i}.bin" for i in range(3)]
    files[0].parent.mkdir()
    for i, f in enumerate(files):
        f.write_bytes(bytes([i]) * 10)
    cache = tmp_path / "cache.json"
    first = digest.files_digest(files, cache)
    calls = []
    real = digest.file_sha256
    monkeypatch.setattr(digest, "file_sha256", lambda p: calls.append(Path(p).name) or real(p))
    assert digest.files_digest(files, cache) == first and calls == []
    files[1].write_bytes(b"other bytes")
    assert digest.files_digest(files, cache) != first and calls == ["1.bin"]
    before_move = digest.files_digest(files)
    moved = tmp_path / "moved"
    (tmp_path / "d").rename(moved)
    assert digest.files_digest([moved / f.name for f in files]) == before_move  # a moved folder keeps its digest


def test_a_model_of_another_scene_is_refused(tmp_path):
    from r2l.core.errors import R2LError
    from r2l.data.builtin import write_blender
    from r2l.data.registry import load_scene

    scene = load_scene("blender", write_blender(tmp_path / "a", seed=0, resolution=16, n_train=2, n_val=1, n_test=1))
    scene.digest = "abc"
    scene.check_identity(scene.identity(), "teacher.pt")
    scene.check_identity({"name": scene.name, "H": 16}, "old.pt")  # older files: only what they record
    for key, value in [("name", "lego"), ("H", 32), ("data_sha256", "def"), ("format", "llff")]:
        try:
            scene.check_identity({**scene.identity(), key: value}, "results/x/teacher/model.pt")
        except R2LError as err:
            assert str(err).startswith("results/x/teacher/model.pt: made for another scene") and key in str(err)
        else:
            raise AssertionError(f"a model with another {key} was accepted")


def test_each_attempt_keeps_its_own_copy_of_the_log(tmp_path, monkeypatch):
    """Snakemake deletes a rule's log before a rerun; the copy under logs/.../attempts/ of a killed attempt stays."""
    from r2l.core.log import log, progress
    from r2l.workflow import stage

    monkeypatch.chdir(tmp_path)
    job = _FakeJob(tmp_path, "results/x/out.txt")
    job.log = ["logs/x/rule.log"]
    with stage(job):
        log.info("first attempt")
        with progress(3, desc="steps") as bar:
            bar.update(3)
    Path("logs/x/rule.log").unlink()  # what Snakemake does before the rerun
    with stage(job):
        log.info("second attempt")
    attempts = sorted(Path("logs/x/attempts").glob("rule.*.log"))
    assert len(attempts) == 2
    assert "first attempt" in attempts[0].read_text() and "steps" in attempts[0].read_text()
    assert "second attempt" in attempts[1].read_text()
    assert "second attempt" in Path("logs/x/rule.log").read_text()


def _dry_run_jobs(workdir: Path, deploy: dict) -> dict[str, int]:
    """Job counts of a dry run of the tiny config with ``deploy`` as its deploy: section."""
    extra = workdir / "deploy.yaml"
    extra.write_text(yaml.safe_dump({"deploy": deploy}))
    out = run_snakemake(workdir, "-n", configfiles=(TEST_CONFIG, extra))
    assert out.returncode == 0, out.stderr[-3000:]
    return job_counts(out.stdout)


def test_deploy_section_adds_export_viewer_and_screenshot_jobs(tmp_path):
    """Off by default; export: one job per finetuned student (the tiny config's builtin scene compares r2l, so
    3 for 2 scenes) and their table; viewer: one per scene (and the exports); screenshot: one per scene, implying both."""
    off = _dry_run_jobs(tmp_path, {"export": False})
    assert not {"export", "deploy_summary", "viewer", "viewer_screenshot"} & set(off)
    exported = _dry_run_jobs(tmp_path, {"export": True})
    assert exported["export"] == 3 and exported["deploy_summary"] == 1 and "viewer" not in exported
    shot = _dry_run_jobs(tmp_path, {"screenshot": True})
    assert (shot["export"], shot["viewer"], shot["viewer_screenshot"]) == (3, 2, 2)
    deployed = ("export", "deploy_summary", "viewer", "viewer_screenshot", "total")
    assert {k: v for k, v in shot.items() if k not in deployed} == off


def test_a_part_that_does_not_exist_is_one_error_and_no_folder(tmp_path):
    """The tiny config renders pseudo-data in 2 jobs: asking for part 2 stops before any folder is made."""
    target = "results/builtin/pseudo_data/part_2/part.json"
    out = run_snakemake(tmp_path, target)
    assert out.returncode != 0
    assert "pseudo-data part 2 does not exist: pseudo_data.jobs is 2 (parts 0 to 1)" in out.stdout + out.stderr
    assert not (tmp_path / "results").exists()
