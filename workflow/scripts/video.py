"""The finetuned student along the scene's camera path (orbit or spiral), as MP4 (GIF without ffmpeg)."""

from r2l.figures import render_video
from r2l.student import load_student
from r2l.workflow import stage

with stage(snakemake) as job:
    cfg = job.section("evaluate")
    scene = job.scene()
    poses = scene.render_poses[:: cfg["video_stride"]]
    H, W = scene.size_at_width(cfg["video_resolution"])
    render_video(load_student(snakemake.input.model, device=cfg["device"]), scene, poses, snakemake.output[0],
                 fps=cfg["video_fps"], H=H, W=W)
