"""The paper preset resolved for a scene does what the authors did: float32 everywhere, their learning-rate
horizons per format (nerf-pytorch and R2L's configs: 500k Blender, 250k LLFF), their ground truth order."""

from __future__ import annotations

from pathlib import Path

import yaml

from r2l.core.config import deep_merge, stage_section, validate_config
from r2l.data.builtin import write_blender, write_llff
from r2l.data.registry import load_scene
from r2l.models.teacher import teacher_config_from_dict
from r2l.stages.student import distill_config_from_dict, resolve_lr_decay
from r2l.stages.teacher import resolve_for_scene

ROOT = Path(__file__).resolve().parents[1]


def paper_config(tmp_path) -> dict:
    base = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    paper = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
    scenes = {"scenes": {
        "lego": {"format": "blender", "path": str(write_blender(tmp_path / "lego", resolution=16, n_train=2,
                                                                 n_val=1, n_test=1))},
        "fern": {"format": "llff", "path": str(write_llff(tmp_path / "fern", width=16, height=12, n_views=6))},
    }}
    config = deep_merge(deep_merge(base, paper), scenes)
    config["scenes"] = scenes["scenes"]
    return validate_config(config)


def test_paper_preset_resolves_the_authors_settings_per_format(tmp_path):
    config = paper_config(tmp_path)
    expect = {"lego": 500_000, "fern": 250_000}
    for name, fmt in (("lego", "blender"), ("fern", "llff")):
        scene = load_scene(fmt, config["scenes"][name]["path"], factor=8)
        teacher = resolve_for_scene(teacher_config_from_dict(stage_section(config, "teacher", name)), scene)
        student = resolve_lr_decay(distill_config_from_dict(stage_section(config, "student", name)), scene.ndc)
        assert teacher.lr_decay_steps == student.lr_decay_steps == expect[name], name
        assert teacher.precision == student.precision == "fp32"
        assert stage_section(config, "pseudo_data", name)["precision"] == "fp32"
        assert stage_section(config, "pseudo_data", name)["llff_enlarge"] == 1.1
    assert config["scene_defaults"]["resize_order"] == "authors"


def test_a_set_horizon_is_kept():
    cfg = distill_config_from_dict({"lr_decay_steps": 1234})
    assert resolve_lr_decay(cfg, ndc=True).lr_decay_steps == 1234
