"""Terrain: total curvature of a recent surface (DESIGN step 5).

Total curvature K = z_xx^2 + 2 z_xy^2 + z_yy^2 (Wilson & Gallant 2000), in m^-2, of the
per-pixel median of the latest ``latest_dems`` coregistered DEMs (older DEMs fill its gaps).
Slump headwalls and scar floors stand out as high curvature; the reference study fed
K x 10^6 to its Mask R-CNN.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import ndimage


def recent_surface(z: np.ndarray, latest: int) -> np.ndarray:
    """Median of the latest ``latest`` DEMs of the stack (n, H, W), gaps filled from all DEMs."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels stay NaN
        recent = np.nanmedian(z[-latest:], axis=0)
        gaps = ~np.isfinite(recent)
        if gaps.any():  # only there: a median over the whole stack is costly
            recent[gaps] = np.nanmedian(z[:, gaps], axis=0)
    return recent.astype(np.float32)


def nan_gaussian(a: np.ndarray, sigma_px: float, dtype=np.float64) -> np.ndarray:
    """Gaussian smoothing that ignores NaN (normalised convolution); NaN stays NaN.
    ``dtype`` float32 halves the cost where centimetre precision of the result suffices."""
    valid = np.isfinite(a)
    num = ndimage.gaussian_filter(np.where(valid, a, 0.0).astype(dtype), sigma_px, truncate=3.0)
    den = ndimage.gaussian_filter(valid.astype(dtype), sigma_px, truncate=3.0)
    with np.errstate(all="ignore"):
        out = num / den
    out[~valid] = np.nan
    return out


def total_curvature(z: np.ndarray, res: float, smoothing_sigma_m: float = 0.0) -> np.ndarray:
    """K = z_xx^2 + 2 z_xy^2 + z_yy^2 (m^-2) of a north-up grid with pixel size ``res`` m."""
    zz = nan_gaussian(z, smoothing_sigma_m / res) if smoothing_sigma_m > 0 else z.astype(np.float64)
    zy, zx = np.gradient(zz, res)
    zyy, zyx = np.gradient(zy, res)
    _, zxx = np.gradient(zx, res)
    return (zxx**2 + 2 * zyx**2 + zyy**2).astype(np.float32)

