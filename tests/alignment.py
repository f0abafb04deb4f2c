"""Test helper: the similarity transform between two point sets (to compare our poses with published ones)."""

from __future__ import annotations

import numpy as np


def umeyama(src: np.ndarray, dst: np.ndarray, with_scale: bool = True) -> tuple[float, np.ndarray, np.ndarray]:
    """Similarity ``(s, R, t)`` minimising ``sum ||dst_i - (s R src_i + t)||^2`` (Umeyama 1991).

    src, dst: (n, 3) corresponding points, n >= 3 not collinear. Returns s (float), R (3, 3) a proper
    rotation, t (3,). with_scale=False fixes s = 1 (a rigid fit).
    """
    src, dst = np.asarray(src, dtype=np.float64), np.asarray(dst, dtype=np.float64)
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    xs, xd = src - mu_s, dst - mu_d
    U, D, Vt = np.linalg.svd(xd.T @ xs / len(src))
    S = np.diag([1.0, 1.0, np.sign(np.linalg.det(U) * np.linalg.det(Vt)) or 1.0])
    R = U @ S @ Vt
    s = float(np.trace(np.diag(D) @ S) / (xs**2).sum(axis=1).mean()) if with_scale else 1.0
    return s, R, mu_d - s * R @ mu_s
