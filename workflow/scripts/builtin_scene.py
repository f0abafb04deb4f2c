"""Render the built-in analytic scene into a Blender-format (or LLFF-format) folder."""

from r2l.builtin import write_blender, write_llff
from r2l.workflow import stage

with stage(snakemake) as job:
    entry = snakemake.params.entry
    opts = entry.get("builtin", {})
    out = snakemake.output[0]
    if opts.get("layout", "orbit") == "forward_facing":
        width = entry.get("resolution", 64)
        write_llff(out, seed=opts.get("seed", 0), width=width, height=opts.get("height", width * 3 // 4),
                   n_views=opts.get("n_views", 24), spp=opts.get("spp", 2))
    else:
        write_blender(out, seed=opts.get("seed", 0), resolution=entry.get("resolution", 64),
                      n_train=opts.get("n_train", 60), n_val=opts.get("n_val", 10),
                      n_test=opts.get("n_test", 20), spp=opts.get("spp", 2))
