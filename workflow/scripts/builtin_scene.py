"""Render the built-in analytic scene into a Blender-format (or LLFF-format) folder; unbounded: Blender + marker."""

import _require_r2l  # noqa: F401  (one clear line if r2l is not installed; first)
from r2l.data.builtin import write_blender, write_llff, write_unbounded
from r2l.workflow import stage

with stage(snakemake) as job:
    entry = snakemake.params.entry  # scene_defaults filled in
    opts, width, out = entry["builtin"], entry["resolution"], snakemake.output[0]
    if opts["layout"] == "forward_facing":
        write_llff(out, seed=opts["seed"], width=width, height=opts["height"] or width * 3 // 4,
                   n_views=opts["n_views"], spp=opts["spp"], hold=entry["llff_hold"])
    elif opts["layout"] == "unbounded":
        write_unbounded(out, seed=opts["seed"], resolution=width, n_train=opts["n_train"], n_val=opts["n_val"],
                        n_test=opts["n_test"], spp=opts["spp"])
    else:
        write_blender(out, seed=opts["seed"], resolution=width, n_train=opts["n_train"], n_val=opts["n_val"],
                      n_test=opts["n_test"], spp=opts["spp"])
