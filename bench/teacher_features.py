"""Probe: the grid student with its tri-plane features replaced by a copy of the grid teacher's appearance grids.

The grid student (r2l/models/gridstudent.py) reads learned tri-plane features at points about its predicted
surface. This probe keeps everything else (geometry, MLP, losses, distillation with hard-example mining,
finetuning) and reads instead the teacher's own TensoRF appearance features: its VM planes, lines and basis
matrix, copied when distillation starts and trained on (``--features teacher``), or the same VM shapes from a
random start (``--features vm-random``), or the student as it is (``--features triplane``). It runs on a
pipeline run's folder that holds the teacher, the pseudo-data and the real stores, and prints the test PSNR
after distillation and after finetuning:

    snakemake --until pseudo_data real_data --cores 1 --resources gpu=1   # in RUN, with the scene's config
    python bench/teacher_features.py --run RUN --scene builtin --features teacher --steps 3000 --finetune 1000

Settings come from config/config.yaml's student and finetune sections merged with ``--configfile`` files (the
same files the run used); ``--steps`` replaces the distillation steps and their decay horizon. Not a pipeline
option: docs/students.md says what it measured.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from r2l.core.config import deep_merge, validate_config
from r2l.core.metrics import psnr
from r2l.models import students
from r2l.models.contracted import RaySpace
from r2l.models.grid import LINE_AXES, PLANE_AXES, GridField
from r2l.models.gridstudent import ADAM_BETAS, GridStudentNet
from r2l.models.render import pose_rays
from r2l.models.teacher import load_teacher
from r2l.stages.student import distill_config_from_dict, finetune_config, finetune_student, train_student
from r2l.workflow import scene_from_config

CHECKOUT = Path(__file__).resolve().parents[1]


class TeacherFeatureStudent(GridStudentNet):
    """The grid student reading TensoRF VM appearance features (the teacher's shapes) instead of tri-planes.

    field: the grid teacher's field; copy: start from its planes, lines and basis (else random ones).
    """

    def __init__(self, cfg, box: torch.Tensor, field: GridField, copy: bool, space: RaySpace):
        components, dim = field.cfg.app_components, field.cfg.app_dim
        # feature_dim = dim; tiny unused planes
        super().__init__(replace(cfg, channels=dim, resolutions=(2,)), box, space)
        self.planes = nn.ParameterList()
        self.register_buffer("vm_box", field.grid_aabb.clone())
        planes, lines = field.app_planes.detach().clone(), field.app_lines.detach().clone()
        if not copy:
            planes, lines = 0.1 * torch.randn_like(planes), 0.1 * torch.randn_like(lines)
        self.app_planes, self.app_lines = nn.Parameter(planes), nn.Parameter(lines)
        self.basis = nn.Linear(3 * components, dim, bias=False)
        if copy:
            self.basis.load_state_dict(field.basis.state_dict())

    def features(self, pts: torch.Tensor) -> torch.Tensor:
        """pts: (m, 3) render space. Returns (m, app_dim): basis(plane x line products), as the teacher's."""
        x = (pts - self.vm_box[0]) / (self.vm_box[1] - self.vm_box[0]) * 2.0 - 1.0
        plane_xy = torch.stack([x[:, [a, b]] for a, b in PLANE_AXES])[:, :, None]
        line_x = torch.stack([x[:, c] for c in LINE_AXES])
        line_xy = torch.stack([torch.zeros_like(line_x), line_x], dim=-1)[:, :, None]
        products = (F.grid_sample(self.app_planes, plane_xy, align_corners=True)[..., 0]
                    * F.grid_sample(self.app_lines, line_xy, align_corners=True)[..., 0])  # (3, C, m)
        return self.basis(products.permute(2, 0, 1).reshape(pts.shape[0], -1))

    def param_groups(self) -> list[dict]:
        groups = [([self.geometry, self.background], self.cfg.lr_geometry_scale),
                  ([self.app_planes, self.app_lines], self.cfg.lr_features_scale),
                  (list(self.mlp.parameters()) + list(self.basis.parameters()), self.cfg.lr_mlp_scale)]
        return [{"params": params, "lr_scale": scale, "betas": ADAM_BETAS} for params, scale in groups]


def merged_config(configfiles: list[str]) -> dict:
    """config/config.yaml with the given files merged over it, validated."""
    config = yaml.safe_load((CHECKOUT / "config" / "config.yaml").read_text())
    for path in configfiles:
        config = deep_merge(config, yaml.safe_load(Path(path).read_text()))
    return validate_config(config)


def test_view_psnr(model: nn.Module, scene, near: float, far: float, chunk: int = 16384) -> float:
    """Mean PSNR of ``model`` over the scene's test views (deterministic points)."""
    model.eval()
    scores = []
    with torch.no_grad():
        for gt, pose in zip(*scene.split("test")):
            rays_o, rays_d = pose_rays(pose, scene.H, scene.W, scene.focal, scene.ndc, scene.ndc_near, "cpu")
            pred = torch.cat([model(rays_o[i:i + chunk], rays_d[i:i + chunk], near, far, train=False)
                              for i in range(0, rays_o.shape[0], chunk)])
            scores.append(psnr(pred.reshape(scene.H, scene.W, 3).numpy(), gt))
    model.train()
    return float(np.mean(scores))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", type=Path, required=True, help="a pipeline run's folder (teacher, pseudo and real data)")
    ap.add_argument("--scene", required=True)
    ap.add_argument("--configfile", nargs="*", default=[], help="config files the run used beyond config.yaml")
    ap.add_argument("--features", choices=("teacher", "vm-random", "triplane"), default="teacher")
    ap.add_argument("--steps", type=int, default=3000, help="distillation steps (and their decay horizon)")
    ap.add_argument("--finetune", type=int, default=1000, help="finetuning steps on the real training views")
    ap.add_argument("--out", type=Path, default=Path("teacher_features_probe"), help="folder for the students")
    ap.add_argument("--distilled", type=Path, default=None,
                    help="finetune this distilled student (a probe's student.pt) instead of distilling one")
    args = ap.parse_args()
    torch.set_num_threads(1)
    config = merged_config(args.configfile)
    section = dict(config["student"], steps=args.steps, lr_decay_steps=args.steps, device="cpu", compare=[])
    cfg = distill_config_from_dict(section)
    results = args.run / "results" / args.scene
    field = load_teacher(results / "teacher" / "model.pt", device="cpu").model["field"]
    built = []

    def build(net_cfg, box, space):
        net = GridStudentNet(net_cfg, box, space) if args.features == "triplane" else \
            TeacherFeatureStudent(net_cfg, box, field, copy=args.features == "teacher", space=space)
        built.append(net)
        return net

    students.FAMILIES["grid"] = replace(students.FAMILIES["grid"], build=build)
    real = results / "real_data"
    scene = scene_from_config(config, args.scene, args.run / "resources" / "scenes" / args.scene
                              if config["scenes"][args.scene]["format"] == "builtin" else None)
    start, distilled = time.time(), args.distilled or args.out / "student.pt"
    near, far = store_bounds(real / "val")
    if args.distilled is None:
        train_student([results / "pseudo_data"], cfg, distilled, args.out / "resume_student", val_store=real / "val")
        minutes = (time.time() - start) / 60
        print(f"distilled ({minutes:.1f} min): test {test_view_psnr(built[-1], scene, near, far):.2f} dB")
    finetune_student(distilled, real / "train", real / "val", finetune_config(cfg, config["finetune"]),
                     args.finetune, args.out / "finetuned.pt", args.out / "resume_finetune")
    built[-1].load_state_dict(torch.load(args.out / "finetuned.pt", weights_only=False)["weights"])
    print(f"finetuned: test {test_view_psnr(built[-1], scene, near, far):.2f} dB")


def store_bounds(store: Path) -> tuple[float, float]:
    """near and far of a view store (its meta.json)."""
    meta = json.loads((store / "meta.json").read_text())
    return float(meta["near"]), float(meta["far"])


if __name__ == "__main__":
    main()
