"""The finetuned student along the scene's camera path (orbit or spiral), as H.264 MP4 (imageio-ffmpeg's ffmpeg)."""

import _require_r2l  # noqa: F401  (one clear line if r2l is not installed; first)
from r2l.models.load import load_model, model_scene
from r2l.report.figures import render_video
from r2l.workflow import stage

with stage(snakemake) as job:
    cfg = job.section("evaluate")
    scene = job.scene()
    poses = scene.render_poses[:: cfg["video_stride"]]
    H, W = scene.size_at_width(cfg["video_resolution"])
    model = load_model(snakemake.input.model, device=cfg["device"])
    scene.check_identity(model_scene(model), snakemake.input.model)
    render_video(model, scene, poses, snakemake.output[0], fps=cfg["video_fps"], H=H, W=W)
