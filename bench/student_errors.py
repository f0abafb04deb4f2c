"""Where a grid student loses to its teacher: test pixels binned by the teacher's opacity and depth edges.

For every test view of a pipeline run's scene it renders the teacher (colour, opacity, expected depth) and each
given grid student (colour and surface depth), and prints per bin (background: teacher opacity < 0.05; partial:
< 0.95; edge: opaque with a neighbour's surface more than 2 point spacings away; smooth: the other opaque
pixels) the share of pixels and each model's mean squared error; then, on edge and smooth pixels, how far each
student's surface depth is from the teacher's (in spacings (far - near) / n_points) and its error where that
depth is within one spacing or not:

    python bench/student_errors.py --run RUN --scene lego_100 --configfile config/lego_100.yaml \\
        results/lego_100/student/model.pt results/lego_100/finetuned/model.pt

Model paths are relative to RUN; settings come from config/config.yaml merged with ``--configfile`` files.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from r2l.models.load import load_model
from r2l.models.render import pose_rays
from r2l.workflow import scene_from_config
from teacher_features import merged_config

BINS = ("background", "partial", "edge", "smooth")


def surface_jump(surface: np.ndarray, acc: np.ndarray) -> np.ndarray:
    """Per pixel of ``surface, acc: (H, W)``: the largest distance to the surface of an opaque 4-neighbour."""
    s, a = np.pad(surface, 1, mode="edge"), np.pad(acc, 1, mode="edge")
    shifts = [(slice(1, -1), slice(2, None)), (slice(1, -1), slice(None, -2)), (slice(2, None), slice(1, -1)),
              (slice(None, -2), slice(1, -1))]
    return np.max([np.abs(s[i, j] - surface) * (a[i, j] > 0.5) for i, j in shifts], axis=0)


def view_errors(teacher, students: list, scene, gt: np.ndarray, pose) -> dict:
    """One test view: per-pixel squared errors (H*W,) per model, the bin of each pixel, the teacher's surface
    depth and each student's (H*W,)."""
    H, W = scene.H, scene.W
    rays_o, rays_d = pose_rays(pose, H, W, scene.focal, scene.ndc, scene.ndc_near, "cpu")
    gt = np.asarray(gt, np.float32)[..., :3].reshape(-1, 3)
    with torch.no_grad():
        out = teacher.render_outputs(rays_o, rays_d)
        acc, depth = out["acc"].numpy(), out["depth"].numpy()
        errs, surfaces = [((out["rgb"].numpy() - gt) ** 2).mean(-1)], []
        for s in students:
            rgb, aux = s.model(rays_o, rays_d, s.near, s.far, False, with_depth=True)
            errs.append(((rgb.numpy() - gt) ** 2).mean(-1))
            surfaces.append(aux["surface"].numpy())
    surface = depth / np.maximum(acc, 1e-3)
    spacings = [(s.far - s.near) / s.model.cfg.n_points for s in students]
    spacing = spacings[0]  # the edge test's, the first student's
    jump = surface_jump(surface.reshape(H, W), acc.reshape(H, W)).ravel()
    bins = np.where(acc < 0.05, 0, np.where(acc < 0.95, 1, np.where(jump > 2 * spacing, 2, 3)))
    return {"errs": errs, "bins": bins, "surface": surface, "surfaces": surfaces, "spacings": spacings}


def report(names: list[str], views: list[dict]) -> None:
    """Prints the bins' table and the depth table of the module docstring."""
    bins = np.concatenate([v["bins"] for v in views])
    errs = [np.concatenate([v["errs"][k] for v in views]) for k in range(len(names))]
    print("pooled PSNR: " + ", ".join(f"{n} {-10 * np.log10(e.mean()):.2f} dB" for n, e in zip(names, errs)))
    for b, name in enumerate(BINS):
        sel = bins == b
        print(f"{name:10s} {sel.mean():6.1%} of pixels; MSE " + ", ".join(f"{n} {e[sel].mean():.5f}"
                                                                           for n, e in zip(names, errs)))
    surface = np.concatenate([v["surface"] for v in views])
    for k, name in enumerate(names[1:]):
        off = np.abs(np.concatenate([v["surfaces"][k] for v in views]) - surface) / views[0]["spacings"][k]
        for b in (2, 3):
            sel = bins == b
            good, bad = sel & (off <= 1), sel & (off > 1)
            print(f"{name} {BINS[b]}: depth off by > 1 spacing on {(off[sel] > 1).mean():.1%} (median "
                  f"{np.median(off[sel]):.2f}); MSE within 1 spacing {errs[k + 1][good].mean():.5f} (teacher "
                  f"{errs[0][good].mean():.5f}), beyond {errs[k + 1][bad].mean():.5f} "
                  f"(teacher {errs[0][bad].mean():.5f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", type=Path, required=True, help="a pipeline run's folder")
    ap.add_argument("--scene", required=True)
    ap.add_argument("--configfile", nargs="*", default=[], help="config files the run used beyond config.yaml")
    ap.add_argument("models", nargs="+", help="grid student model files, relative to RUN")
    args = ap.parse_args()
    torch.set_num_threads(1)
    config = merged_config(args.configfile)
    builtin = config["scenes"][args.scene]["format"] == "builtin"
    scene = scene_from_config(config, args.scene, args.run / "resources" / "scenes" / args.scene if builtin else None)
    teacher = load_model(args.run / "results" / args.scene / "teacher" / "model.pt", "cpu")
    students = [load_model(args.run / m, "cpu") for m in args.models]
    views = [view_errors(teacher, students, scene, gt, pose) for gt, pose in zip(*scene.split("test"))]
    report(["teacher", *args.models], views)


if __name__ == "__main__":
    main()
