"""Coregistration of a DEM time series: pairwise Nuth & Kääb, then a bundle adjustment.

**Pairwise** (Nuth & Kääb 2011, The Cryosphere 5, 271-290). For a DEM B displaced by
(dx, dy) and raised by dz relative to a reference A, the elevation difference on stable
ground is, to first order,

    dh = B(p) - A(p) = dz - dA/dx * dx - dA/dy * dy

Nuth & Kääb write this as dh / tan(slope) = a cos(b - aspect) + c, with a the shift's
magnitude and b its direction; the linear form above is the same relation in Cartesian
components, solved here by least squares. As in their method the fit is iterated:
B is resampled at the shifted positions (bilinear, only at the sample points), the
remaining residual shift is solved for, and the loop stops when the update falls below
``convergence_m``. Each iteration drops samples beyond ``outlier_nsigma`` robust sigmas
(NMAD) from the median, which removes changing ground, clouds and snow. Stable ground is
valid in both DEMs, matched (matchtag 1) and of slope between ``min_slope_deg`` and
``max_slope_deg`` for the horizontal solve.

**Bundle adjustment** (as in Dai et al. 2025 and the DEMChangeDetection code). Each pair
(A, B) measures the relative displacement d_AB = D_B - D_A of the per-DEM absolute
displacements D. All pairs are solved jointly by weighted least squares with a weak
prior (D ~ N(0, ``prior_sigma_m``)) and a zero-mean constraint, x, y and z separately.
Pairs whose residual exceeds ``residual_reject_nsigma`` robust sigmas are dropped and the
system re-solved; DEMs whose pairs are poor (median NMAD above ``max_dem_nmad_m``, most
pixels far off the stack) are dropped with a reason. The result is each DEM's displacement
relative to the set's mean: the corrected DEM is B(p + (dx, dy)) - dz.

Conventions: x east, y north, metres in EPSG:3413; arrays are north-up rasters (row 0 at
the top), so +y is -row.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from .config import CoregConfig

NMAD_K = 1.4826


def nmad(a: np.ndarray) -> float:
    a = a[np.isfinite(a)]
    if a.size == 0:
        return float("nan")
    return float(NMAD_K * np.median(np.abs(a - np.median(a))))


@dataclass
class PairFit:
    """Displacement of DEM ``j`` relative to DEM ``i`` (metres)."""

    i: int
    j: int
    dx: float = np.nan
    dy: float = np.nan
    dz: float = np.nan
    nmad_m: float = np.nan  # spread of the residual dh on stable ground
    sigma_dx: float = np.nan  # formal 1-sigma of the estimates, inflated for spatially
    sigma_dy: float = np.nan  # correlated errors (independent samples ~ overlap area /
    sigma_dz: float = np.nan  # correlation area)
    n_used: int = 0
    iterations: int = 0
    ok: bool = False
    reason: str = ""


def gradients(z: np.ndarray, res: float) -> tuple[np.ndarray, np.ndarray]:
    """dz/dx (east) and dz/dy (north) by central differences, NaN where undefined."""
    gy_rows, gx = np.gradient(z, res)
    return gx, -gy_rows


def smooth_for_gradients(z: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian-smoothed copy (NaN-aware) whose gradients are not dominated by pixel noise.

    Noisy gradients bias a least-squares shift towards zero (errors in variables); at 2 m
    a few pixels of smoothing removes that while keeping the terrain's slopes.
    """
    if sigma_px <= 0:
        return z
    from .terrain import nan_gaussian

    return nan_gaussian(z, sigma_px)


def sample_stable(
    gx: np.ndarray, gy: np.ndarray, other_valid: np.ndarray, matched: np.ndarray | None, cfg: CoregConfig,
    rng: np.random.Generator, exclude: np.ndarray | None = None,
) -> np.ndarray:
    """Flat indices of up to ``cfg.sample_size`` random stable pixels (reference gradients given)."""
    slope = np.degrees(np.arctan(np.hypot(gx, gy)))
    ok = np.isfinite(slope) & other_valid & (slope <= cfg.max_slope_deg)
    if matched is not None:
        ok &= matched
    if exclude is not None:
        ok &= ~exclude
    idx = np.flatnonzero(ok)
    if idx.size > cfg.sample_size:
        idx = rng.choice(idx, cfg.sample_size, replace=False)
    return idx


def nuth_kaab(
    ref: np.ndarray, tba: np.ndarray, res: float, cfg: CoregConfig, *,
    matched: np.ndarray | None = None, exclude: np.ndarray | None = None, rng: np.random.Generator | None = None,
    i: int = 0, j: int = 1, ref_gradients: tuple[np.ndarray, np.ndarray] | None = None,
) -> PairFit:
    """Displacement (dx, dy, dz) of ``tba`` relative to ``ref`` (same grid, NaN = nodata).

    ``matched`` marks trusted pixels (matchtag 1 in both); ``exclude`` marks known
    changing ground. The fit is on a random subsample of stable pixels.
    ``ref_gradients`` (dz/dx, dz/dy of the smoothed reference) may be passed when the
    same reference serves several pairs.
    """
    rng = rng or np.random.default_rng(0)
    fit = PairFit(i, j)
    valid_b = np.isfinite(tba)
    gx, gy = ref_gradients or gradients(smooth_for_gradients(ref, cfg.gradient_smoothing_m / res), res)
    idx = sample_stable(gx, gy, valid_b, matched, cfg, rng, exclude)
    if idx.size < cfg.min_stable_pixels:
        fit.reason = f"only {idx.size} stable pixels in the overlap"
        return fit
    rows, cols = np.divmod(idx, ref.shape[1])
    a = ref.ravel()[idx].astype(np.float64)
    gxs, gys = gx.ravel()[idx], gy.ravel()[idx]
    slope = np.degrees(np.arctan(np.hypot(gxs, gys)))
    tilted = slope >= cfg.min_slope_deg
    dx = dy = 0.0
    dz = 0.0
    keep = np.ones(idx.size, bool)
    for it in range(1, cfg.max_iterations + 1):
        # B at p + (dx, dy): +x is +col, +y is -row
        b = ndimage.map_coordinates(tba, [rows - dy / res, cols + dx / res], order=1, mode="constant", cval=np.nan,
                                    prefilter=False)
        dh = b - a
        ok = np.isfinite(dh) & np.isfinite(gxs) & np.isfinite(gys)
        if ok.sum() < cfg.min_stable_pixels:
            fit.reason = f"only {int(ok.sum())} valid samples after shifting"
            return fit
        med = np.median(dh[ok])
        spread = max(nmad(dh[ok]), 1e-3)
        keep = ok & (np.abs(dh - med) <= cfg.outlier_nsigma * spread)
        use = keep & tilted
        if use.sum() < cfg.min_stable_pixels:
            # too flat to solve horizontally: vertical only
            dz = float(np.median(dh[keep]))
            fit.reason = "too flat for a horizontal fit; vertical offset only"
            break
        A = np.column_stack([np.ones(use.sum()), -gxs[use], -gys[use]])
        sol, *_ = np.linalg.lstsq(A, dh[use], rcond=None)
        ddz, ddx, ddy = sol
        dx += float(ddx)
        dy += float(ddy)
        fit.iterations = it
        if abs(dx) > 3 * cfg.max_pair_shift_m or abs(dy) > 3 * cfg.max_pair_shift_m:
            fit.reason = "horizontal shift diverged"
            return fit
        if np.hypot(ddx, ddy) < cfg.convergence_m:
            break
    b = ndimage.map_coordinates(tba, [rows - dy / res, cols + dx / res], order=1, mode="constant", cval=np.nan,
                                prefilter=False)
    dh = b - a
    ok = np.isfinite(dh)
    med = np.median(dh[ok])
    spread = max(nmad(dh[ok]), 1e-3)
    keep = ok & (np.abs(dh - med) <= cfg.outlier_nsigma * spread)
    dz = float(np.median(dh[keep]))
    fit.dx, fit.dy, fit.dz = dx, dy, dz
    fit.nmad_m = nmad(dh[keep])
    fit.n_used = int(keep.sum())
    # formal errors: s^2 (A^T A)^-1, inflated by n_used / n_independent
    overlap_m2 = np.count_nonzero(np.isfinite(ref) & valid_b) * res * res
    n_indep = max(1.0, min(fit.n_used, overlap_m2 / (np.pi * cfg.error_correlation_m**2)))
    inflate = fit.n_used / n_indep
    use = keep & tilted
    A = np.column_stack([np.ones(use.sum()), -gxs[use], -gys[use]])
    try:
        cov = np.linalg.inv(A.T @ A) * max(fit.nmad_m, 1e-3) ** 2 * inflate
        fit.sigma_dx, fit.sigma_dy = float(np.sqrt(cov[1, 1])), float(np.sqrt(cov[2, 2]))
    except np.linalg.LinAlgError:
        fit.sigma_dx = fit.sigma_dy = float("inf")
    fit.sigma_dz = float(1.2533 * max(fit.nmad_m, 1e-3) / np.sqrt(n_indep))
    if fit.nmad_m > cfg.max_pair_sigma_m:
        fit.reason = f"poor fit (NMAD {fit.nmad_m:.1f} m)"
    elif max(abs(dx), abs(dy)) >= cfg.max_pair_shift_m:
        fit.reason = f"shift {dx:.1f}, {dy:.1f} m beyond the limit"
    else:
        fit.ok = True
    return fit


@dataclass
class DemOffset:
    index: int
    dx: float = 0.0
    dy: float = 0.0
    dz: float = 0.0
    n_pairs: int = 0
    residual_rms_m: float = np.nan  # RMS of this DEM's pair residuals (x, y, z combined)
    median_pair_nmad_m: float = np.nan
    used: bool = True
    reason: str = ""


@dataclass
class BundleResult:
    offsets: list[DemOffset]
    pairs: list[PairFit]
    rejected_pairs: list[tuple[int, int, str]] = field(default_factory=list)

    @property
    def used(self) -> np.ndarray:
        return np.array([o.used for o in self.offsets])


def _solve(n: int, pairs: list[PairFit], comp: str, prior_sigma: float) -> np.ndarray:
    """Weighted least squares for per-DEM displacements of one component."""
    rows, rhs, w = [], [], []
    for p in pairs:
        r = np.zeros(n)
        r[p.j] = 1.0
        r[p.i] = -1.0
        rows.append(r)
        rhs.append(getattr(p, comp))
        # weight: the pair's formal precision, floored (no pair is better than 2 cm)
        sigma = max(getattr(p, "sigma_" + comp), 0.02)
        w.append(1.0 / sigma**2)
    # weak prior on every DEM and a strong zero-mean constraint
    for k in range(n):
        r = np.zeros(n)
        r[k] = 1.0
        rows.append(r)
        rhs.append(0.0)
        w.append(1.0 / prior_sigma**2)
    rows.append(np.ones(n) / n)
    rhs.append(0.0)
    w.append(1e6)
    A = np.asarray(rows) * np.sqrt(np.asarray(w))[:, None]
    b = np.asarray(rhs) * np.sqrt(np.asarray(w))
    sol, *_ = np.linalg.lstsq(A, b, rcond=None)
    return sol


def bundle_adjust(n: int, pairs: list[PairFit], cfg: CoregConfig) -> BundleResult:
    """Per-DEM displacements (relative to the mean of the used DEMs) from pairwise fits."""
    offsets = [DemOffset(k) for k in range(n)]
    rejected: list[tuple[int, int, str]] = [(p.i, p.j, p.reason) for p in pairs if not p.ok]
    good = [p for p in pairs if p.ok]
    # DEM screening: a DEM whose pairs are all poor is a blunder (clouds, bad stereo)
    for o in offsets:
        mine = [p.nmad_m for p in good if o.index in (p.i, p.j)]
        o.median_pair_nmad_m = float(np.median(mine)) if mine else np.nan
        if not mine:
            o.used, o.reason = False, "no usable pair (no overlap or every fit failed)"
        elif o.median_pair_nmad_m > cfg.max_dem_nmad_m:
            o.used, o.reason = False, f"poor fits with every other DEM (median NMAD {o.median_pair_nmad_m:.2f} m)"
    good = [p for p in good if offsets[p.i].used and offsets[p.j].used]
    used_idx = [o.index for o in offsets if o.used]
    if not used_idx:
        return BundleResult(offsets, pairs, rejected)
    pos = {k: m for m, k in enumerate(used_idx)}

    def remap(p: PairFit) -> PairFit:
        return dataclasses.replace(p, i=pos[p.i], j=pos[p.j])

    while True:
        sub = [remap(p) for p in good]
        sol = {c: _solve(len(used_idx), sub, c, cfg.prior_sigma_m) for c in ("dx", "dy", "dz")}
        res = np.array([[getattr(p, c) - (sol[c][q.j] - sol[c][q.i]) for c in ("dx", "dy", "dz")] for p, q in zip(good, sub)])
        if len(good) < 3:
            break
        mag = np.hypot(np.hypot(res[:, 0], res[:, 1]), res[:, 2])
        # normalised by each pair's own precision (floored), so one blunder cannot hide in
        # a residual scale it inflates itself
        sig = np.array([np.sqrt(p.sigma_dx**2 + p.sigma_dy**2 + p.sigma_dz**2) for p in good])
        norm = mag / np.maximum(sig, cfg.min_residual_reject_m / cfg.residual_reject_nsigma)
        degree = np.bincount([k for p in good for k in (p.i, p.j)], minlength=n)
        removable = np.array([degree[p.i] > 2 and degree[p.j] > 2 for p in good])
        norm = np.where(removable, norm, 0.0)
        worst = int(np.argmax(norm))
        if norm[worst] <= cfg.residual_reject_nsigma:
            break
        p = good.pop(worst)
        rejected.append((p.i, p.j, f"inconsistent with the other pairs (residual {mag[worst]:.2f} m)"))
    for k, o in zip(used_idx, (offsets[k] for k in used_idx)):
        m = pos[k]
        o.dx, o.dy, o.dz = (float(sol[c][m]) for c in ("dx", "dy", "dz"))
    for o in offsets:
        mine = [r for p, r in zip(good, res) if o.index in (p.i, p.j)]
        o.n_pairs = len(mine)
        if mine:
            o.residual_rms_m = float(np.sqrt(np.mean(np.sum(np.square(mine), axis=1))))
        elif o.used:
            o.used, o.reason = False, "every pair rejected by the adjustment"
    return BundleResult(offsets, pairs, rejected)


def overlap_fraction(a_valid: np.ndarray, b_valid: np.ndarray) -> float:
    both = np.count_nonzero(a_valid & b_valid)
    smaller = min(np.count_nonzero(a_valid), np.count_nonzero(b_valid))
    return both / smaller if smaller else 0.0


def coregister_stack(
    z: np.ndarray, matched: np.ndarray, res: float, cfg: CoregConfig, *, seed: int = 0, exclude: np.ndarray | None = None,
) -> BundleResult:
    """Pairwise Nuth & Kääb over every overlapping pair of the stack ``z`` (n, H, W), then
    the bundle adjustment. ``matched`` (n, H, W) marks matchtag-1 pixels.

    With ``cfg.second_pass`` the ground found changing after the first adjustment (see
    :func:`changing_ground`) is excluded and everything is solved again: debris lobes and
    scars on valley sides otherwise bias the horizontal offsets, since steep ground carries
    most of their information.
    """
    first = _coregister_once(z, matched, res, cfg, seed=seed, exclude=exclude)
    if not cfg.second_pass:
        return first
    moving = changing_ground(z, first, res, cfg.changing_threshold_m, int(round(cfg.changing_dilate_m / res)))
    if exclude is not None:
        moving |= exclude
    return _coregister_once(z, matched, res, cfg, seed=seed, exclude=moving)


def _coregister_once(
    z: np.ndarray, matched: np.ndarray, res: float, cfg: CoregConfig, *, seed: int = 0, exclude: np.ndarray | None = None,
) -> BundleResult:
    n = z.shape[0]
    valid = np.isfinite(z)
    rng = np.random.default_rng(seed)
    pairs: list[PairFit] = []
    for i in range(n):
        grads = gradients(smooth_for_gradients(z[i], cfg.gradient_smoothing_m / res), res)
        for j in range(i + 1, n):
            if overlap_fraction(valid[i], valid[j]) < cfg.min_overlap_fraction:
                continue
            pairs.append(nuth_kaab(z[i], z[j], res, cfg, matched=matched[i] & matched[j], exclude=exclude, rng=rng,
                                   i=i, j=j, ref_gradients=grads))
    return bundle_adjust(n, pairs, cfg)


def changing_ground(z: np.ndarray, bundle: BundleResult, res: float, threshold_m: float, dilate_px: int) -> np.ndarray:
    """Pixels whose corrected elevation changes through the record (|median before k -
    median after k| > ``threshold_m`` for k at a third, half and two thirds of the series),
    dilated: slumps, debris, drained lakes and subsidence, excluded from a second pass."""
    used = [o for o in bundle.offsets if o.used]
    if len(used) < 4:
        return np.zeros(z.shape[1:], bool)
    corr = np.stack([apply_offsets(z[o.index], o.dx, o.dy, o.dz, res) for o in used])
    n = len(used)
    changing = np.zeros(z.shape[1:], bool)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels: never "changing"
        for k in sorted({n // 3, n // 2, (2 * n) // 3} - {0, n}):
            d = np.abs(np.nanmedian(corr[k:], axis=0) - np.nanmedian(corr[:k], axis=0))
            changing |= d > threshold_m
    return ndimage.binary_dilation(changing, iterations=dilate_px) if dilate_px else changing


def apply_offsets(z: np.ndarray, dx: float, dy: float, dz: float, res: float) -> np.ndarray:
    """The corrected DEM: B(p + (dx, dy)) - dz, bilinear, NaN outside or next to nodata."""
    rows, cols = np.mgrid[0 : z.shape[0], 0 : z.shape[1]].astype(np.float32)
    out = ndimage.map_coordinates(z, [rows - dy / res, cols + dx / res], order=1, mode="constant", cval=np.nan,
                                  prefilter=False)
    return (out - dz).astype(np.float32)


def shift_mask(mask: np.ndarray, dx: float, dy: float, res: float) -> np.ndarray:
    """A boolean mask moved with its DEM (nearest neighbour)."""
    return ndimage.shift(mask.astype(np.uint8), (dy / res, -dx / res), order=0, mode="constant", cval=0) > 0
