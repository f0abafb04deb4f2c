"""R2L's published numbers, as data, for reading our results beside the paper's.

Source: Wang et al., "R2L: Distilling Neural Radiance Field to Neural Light Field for Efficient Novel
View Synthesis", ECCV 2022, arXiv:2203.17261 (per-scene PSNR tables and Table 2), and the project
page https://snap-research.github.io/R2L. All PSNRs are test-set means in dB at the paper's evaluation
resolution: Blender (NeRF synthetic) at 400x400 on all 200 test views, LLFF at factor 8 with every 8th
image held out. "NeRF" is the teacher R2L distils from (coarse + fine, 64 + 128 samples; LLFF 64 + 64).
"""

from __future__ import annotations

import re

SOURCE = (
    "R2L (Wang et al., ECCV 2022), arXiv:2203.17261, per-scene PSNR tables and Table 2; "
    "project page https://snap-research.github.io/R2L"
)

# scene -> (NeRF teacher PSNR, R2L student PSNR), dB, 400x400, 200 test views.
BLENDER_PSNR: dict[str, tuple[float, float]] = {
    "chair": (33.90, 36.71),
    "drums": (25.56, 26.03),
    "ficus": (28.88, 28.63),
    "hotdog": (34.64, 38.07),
    "lego": (31.42, 32.53),
    "materials": (29.22, 30.20),
    "mic": (30.84, 32.80),
    "ship": (29.30, 29.98),
}

# scene -> (NeRF teacher PSNR, R2L student PSNR), dB, LLFF factor 8, every 8th image held out.
LLFF_PSNR: dict[str, tuple[float, float]] = {
    "room": (33.07, 33.30),
    "fern": (26.86, 26.87),
    "leaves": (22.40, 22.71),
    "orchids": (21.29, 21.01),
    "flower": (28.22, 28.67),
    "trex": (28.10, 28.12),
    "horns": (28.86, 28.95),
}

# Paper Table 2 (NeRF synthetic unless noted). psnr_real is the LLFF mean the paper reports.
TABLE2: dict[str, dict[str, float]] = {
    "nerf": {"size_mb": 2.4, "mflops_per_ray": 303.82, "psnr_synthetic": 30.47, "psnr_real": 27.68},
    "r2l": {"size_mb": 23.7, "mflops_per_ray": 11.79, "psnr_synthetic": 31.87, "psnr_real": 27.79},
}


def published_psnr(paper_scene: str | None) -> tuple[float, float] | None:
    """(NeRF, R2L) published PSNR of a paper scene name, or None when the paper does not report it."""
    if paper_scene is None:
        return None
    return BLENDER_PSNR.get(paper_scene) or LLFF_PSNR.get(paper_scene)


def match_paper_scene(name: str, mapping: dict[str, str] | None = None) -> str | None:
    """The paper scene a scene of ours corresponds to, or None.

    An explicit ``mapping[name]`` wins; otherwise (absent or None, the config's "matched by name") the name
    itself, then the name with a trailing ``_<digits>`` (a resolution tag such as ``lego_100``) removed,
    lower-cased.
    """
    if mapping and mapping.get(name) is not None:
        return mapping[name] if published_psnr(mapping[name]) else None
    for candidate in (name.lower(), re.sub(r"_\d+$", "", name.lower())):
        if published_psnr(candidate):
            return candidate
    return None
