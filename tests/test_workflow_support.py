"""The glue between Snakemake and the package: resume folders that never resume stale weights."""

import logging

from r2l.workflow import prepare_resume_dir


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
