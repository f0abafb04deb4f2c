"""Image-quality metrics: PSNR, SSIM and (when it can run offline) LPIPS.

Images are ``(H, W, 3)`` arrays or tensors with values in [0, 1] (float; uint8 is scaled by 1/255).

- PSNR: ``-10 log10(MSE)`` in dB, computed in float64. Identical images would give +inf; like
  :func:`r2l.core.runtime.psnr_from_mse` the MSE is floored at 1e-12, so they score a finite 120 dB
  (means over views stay finite). :func:`mean_psnr` is the mean of per-image PSNRs (the paper's
  convention), not the PSNR of the pooled MSE.
- SSIM: Wang et al. 2004 with an 11x11 Gaussian window (sigma 1.5), C1 = 0.01^2, C2 = 0.03^2, data
  range 1, computed per colour channel on the channels-last layout and averaged. The statistics use
  the population (not sample) covariance and the SSIM map is averaged over the "valid" region (pixels
  at least 5 from the border), which is exactly the convention of scikit-image's
  ``structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
  data_range=1.0, channel_axis=-1)``.
- LPIPS (AlexNet): :class:`LpipsScorer` uses the ``lpips`` package only when it and every weight file
  it needs are already on disk; otherwise it reports ``available = False`` with a reason and scores
  are None. It never downloads and never makes up a number.
"""

from __future__ import annotations

import importlib.util
import logging
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

log = logging.getLogger("r2l")

SSIM_SIGMA = 1.5  # Gaussian window standard deviation (pixels)
SSIM_RADIUS = 5  # window half-width: 11 taps (scikit-image: int(3.5 * sigma + 0.5))
SSIM_K1, SSIM_K2 = 0.01, 0.03  # C1 = (K1 * L)^2, C2 = (K2 * L)^2 with data range L = 1


def _as_image(x, name: str) -> torch.Tensor:
    """x: (H, W, 3) array or tensor in [0, 1] (uint8 in [0, 255]) -> float64 CPU tensor (H, W, 3)."""
    t = x.detach().cpu() if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))
    if t.dtype == torch.uint8:
        t = t.double() / 255.0
    t = t.double()
    if t.dim() != 3 or t.shape[-1] != 3:
        raise ValueError(f"{name}: expected an (H, W, 3) image, got shape {tuple(t.shape)}")
    return t


def _check_pair(a, b) -> tuple[torch.Tensor, torch.Tensor]:
    """Two images (H, W, 3) of equal shape as float64 tensors."""
    ta, tb = _as_image(a, "a"), _as_image(b, "b")
    if ta.shape != tb.shape:
        raise ValueError(f"image shapes differ: {tuple(ta.shape)} vs {tuple(tb.shape)}")
    return ta, tb


def psnr_from_mse(mse: float) -> float:
    """PSNR in dB of images in [0, 1] from their mean squared error."""
    return -10.0 * math.log10(max(mse, 1e-12))


def psnr(a, b) -> float:
    """PSNR in dB of two images ``(H, W, 3)`` in [0, 1]; identical images give 120 dB (MSE floor 1e-12)."""
    ta, tb = _check_pair(a, b)
    return psnr_from_mse(float(((ta - tb) ** 2).mean()))


def mean_psnr(preds, gts) -> float:
    """Mean of per-image PSNRs. preds, gts: sequences (or (n, H, W, 3) stacks) of images."""
    if len(preds) != len(gts) or len(preds) == 0:
        raise ValueError(f"need equally many (> 0) predictions and ground truths, got {len(preds)} and {len(gts)}")
    return float(np.mean([psnr(p, g) for p, g in zip(preds, gts)]))


def gaussian_window(sigma: float = SSIM_SIGMA, radius: int = SSIM_RADIUS) -> torch.Tensor:
    """Normalised 1-D Gaussian taps, (2 * radius + 1,) float64."""
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    g = torch.exp(-0.5 * (x / sigma) ** 2)
    return g / g.sum()


def _filter_valid(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter, 'valid' region. x: (C, H, W); g: (k,). Returns (C, H-k+1, W-k+1)."""
    k = g.numel()
    x = x[:, None]  # (C, 1, H, W)
    x = F.conv2d(x, g.view(1, 1, k, 1))
    x = F.conv2d(x, g.view(1, 1, 1, k))
    return x[:, 0]


def ssim(a, b) -> float:
    """Mean SSIM of two images ``(H, W, 3)`` in [0, 1] (each side at least 11 pixels), averaged over channels."""
    ta, tb = _check_pair(a, b)
    g = gaussian_window()
    if min(ta.shape[0], ta.shape[1]) < g.numel():
        raise ValueError(f"SSIM needs images of at least {g.numel()}x{g.numel()} pixels, got {tuple(ta.shape)}")
    x, y = ta.permute(2, 0, 1), tb.permute(2, 0, 1)  # (3, H, W): one plane per colour channel
    mx, my = _filter_valid(x, g), _filter_valid(y, g)
    vx = _filter_valid(x * x, g) - mx * mx
    vy = _filter_valid(y * y, g) - my * my
    cxy = _filter_valid(x * y, g) - mx * my
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    smap = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(smap.mean(dim=(1, 2)).mean())


def _lpips_missing_reason() -> str | None:
    """Why LPIPS (AlexNet) cannot run offline here, or None when every file it needs is on disk."""
    if importlib.util.find_spec("lpips") is None:
        return "the 'lpips' package is not installed"
    if importlib.util.find_spec("torchvision") is None:
        return "'torchvision' (needed by lpips for AlexNet) is not installed"
    try:
        import lpips  # noqa: PLC0415  (optional dependency)
        from torchvision.models import AlexNet_Weights  # noqa: PLC0415
    except ImportError as err:  # installed but broken, or a torchvision without weight enums
        return f"lpips/torchvision cannot be imported: {err}"
    linear = Path(lpips.__file__).parent / "weights" / "v0.1" / "alex.pth"
    if not linear.is_file():
        return f"the lpips linear-layer weights {linear} are missing"
    backbone = Path(torch.hub.get_dir()) / "checkpoints" / Path(AlexNet_Weights.IMAGENET1K_V1.url).name
    if not backbone.is_file():
        return f"the AlexNet weights {backbone} are not cached (lpips would download them)"
    return None


class LpipsScorer:
    """LPIPS (AlexNet, inputs scaled to [-1, 1]) when it can run offline; ``available`` says whether it can.

    ``reason`` is a sentence to log when it is unavailable. Calling an unavailable scorer returns None.
    """

    def __init__(self, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.net = None
        self.reason = _lpips_missing_reason()
        if self.reason is None:
            try:
                import lpips  # noqa: PLC0415

                self.net = lpips.LPIPS(net="alex", verbose=False).to(self.device).eval()
            except (OSError, RuntimeError, ValueError) as err:  # unreadable weights or a failed load
                self.reason = f"lpips could not be built: {err}"
        self.available = self.net is not None
        if not self.available:
            log.warning("LPIPS is not reported (column left empty): %s", self.reason)

    @torch.no_grad()
    def __call__(self, a, b) -> float | None:
        """LPIPS distance of two images ``(H, W, 3)`` in [0, 1] (lower is better), or None if unavailable."""
        if not self.available:
            return None
        ta, tb = _check_pair(a, b)
        return float(self.net(self._to_net(ta), self._to_net(tb)).mean())

    def _to_net(self, img: torch.Tensor) -> torch.Tensor:
        """img: (H, W, 3) in [0, 1] -> (1, 3, H, W) float32 in [-1, 1] on the scorer's device."""
        return (img.permute(2, 0, 1)[None].float() * 2 - 1).to(self.device)
