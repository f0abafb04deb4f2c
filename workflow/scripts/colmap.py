"""Pose a photos scene with COLMAP and write it (LLFF or Blender layout) atomically into resources/scenes/."""

import _require_r2l  # noqa: F401  (one clear line if r2l is not installed; first)
from r2l.data.colmap import colmap_config_from_dict, photos_to_scene
from r2l.workflow import stage

with stage(snakemake) as job:
    scene = snakemake.params.settings["scene"]  # path, layout, factor, llff_hold (scene_defaults filled in)
    cfg = colmap_config_from_dict(job.section("colmap"))
    photos_to_scene(snakemake.input.photos, snakemake.output[0], cfg, layout=scene["layout"],
                    factor=scene["factor"], hold=scene["llff_hold"], threads=snakemake.threads)
