"""Per-pixel dominant elevation step of a coregistered DEM time series.

Model (Dai et al. 2025, after the DEMChangeDetection code): each pixel's series is a
constant with one step, z(t) = a + dh * H(t - t_c). The reference code takes the largest
first difference as the event and refines its magnitude by a least-squares Heaviside fit.
Here the step position itself is the least-squares optimum: for every admissible split
of the sorted series the two-level fit's weighted residual sum of squares is computed
from cumulative sums (O(n) per pixel, vectorised over the cell), and the minimum wins.
This is the maximum-likelihood single step, and it is not fooled by one noisy
difference the way the largest jump is.

Weights: matchtag-1 observations have sigma ``sigma_matched_m``; interpolated (matchtag 0)
ones are kept at ``sigma_interpolated_m`` (the reference code dilates and drops them), and
acquisitions outside the snow-free months at no better than ``sigma_snow_season_m`` (drifts).
Before the fit, observations more than ``blunder_gain_m`` above both temporal neighbours are
removed (clouds; the ground never rises that much in one interval). At the ends of a series
only one neighbour exists, so a drop deeper than ``blunder_gain_m`` between the first two
observations would be read as a cloud in the first one: the threshold sits above the depth
a slump removes from one pixel in one interval. Then, twice, residual
outliers beyond ``outlier_nsigma`` robust sigmas are rejected and the step refitted (spring
snow, unflagged blunders).

Admissibility: each side of a step needs two observations, or one trusted observation
(matched, in a snow-free month) — a step resting on a single spring DEM is snow, not a slump.

Nested scars: a headwall can pass a pixel twice, so where the dominant step is a drop of at
least ``secondary_step_m``, the observations before and after it are searched for one
further step each, and a further drop (>= ``secondary_step_m`` and 3 sigma) is added: dh is
then the change from the first to the last level, the loss a volume must count; t1/t2 stay
those of the dominant step.

Outputs per pixel: ``dh`` (m, negative = ground dropped), ``dh_sigma`` (m, posterior sigma
of the step: the a-posteriori variance factor, floored at 1, times 1/W_before + 1/W_after),
``t1``/``t2`` (days since 2000-01-01 of the last observation before and the first after the
step), ``n_obs`` (observations used) and ``confidence`` (1 when |dh| >= 3 sigma with >= 4
DEMs, sigma < 2 m, and the 3x3 spread of event time < 1 year).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .config import ChangeConfig

NODATA_DATE = -9999


@dataclass
class ChangeResult:
    dh: np.ndarray  # float32 (H, W), NaN undefined
    dh_sigma: np.ndarray  # float32
    t1: np.ndarray  # int32 days since 2000-01-01, NODATA_DATE undefined
    t2: np.ndarray  # int32
    n_obs: np.ndarray  # int16
    confidence: np.ndarray  # uint8: 1 confident, 0 not, 255 undefined


def _fit_chunk(z: np.ndarray, w: np.ndarray, trusted: np.ndarray):
    """Best single step for each column of z (n, P). w = 0 marks unused observations.

    Returns (k, dh, mean_before, mean_after, ssr, W_before, W_after, n_used); k = index of
    the first observation after the step (-1 where no admissible split exists).
    """
    n, p = z.shape
    used = w > 0
    zc = np.where(used, z, 0.0)
    W = np.cumsum(w, axis=0)
    S = np.cumsum(w * zc, axis=0)
    Q = np.cumsum(w * zc * zc, axis=0)
    N = np.cumsum(used, axis=0)
    R = np.cumsum(trusted & used, axis=0)
    Wt, St, Qt, Nt, Rt = W[-1], S[-1], Q[-1], N[-1], R[-1]
    # split before index k = 1..n-1: "before" = cumulative at k-1
    Wb, Sb, Qb, Nb, Rb = W[:-1], S[:-1], Q[:-1], N[:-1], R[:-1]
    Wa, Sa, Qa, Na, Ra = Wt - Wb, St - Sb, Qt - Qb, Nt - Nb, Rt - Rb
    with np.errstate(divide="ignore", invalid="ignore"):
        ssr = (Qb - Sb * Sb / Wb) + (Qa - Sa * Sa / Wa)
    ok = used[1:] & (Nb >= 1) & (Na >= 1) & ((Nb >= 2) | (Rb >= 1)) & ((Na >= 2) | (Ra >= 1))
    ssr = np.where(ok, ssr, np.inf)
    best = np.argmin(ssr, axis=0)
    cols = np.arange(p)
    has = np.isfinite(ssr[best, cols])
    wb, wa = Wb[best, cols], Wa[best, cols]
    with np.errstate(divide="ignore", invalid="ignore"):
        mb = Sb[best, cols] / wb
        ma = Sa[best, cols] / wa
    k = np.where(has, best + 1, -1)
    return k, ma - mb, mb, ma, ssr[best, cols], wb, wa, Nt


def _secondary_steps(z, w, trusted, k, step, mb, ma, wb, wa, var_factor, idx_n, min_step_m):
    """Total change where a pixel dropped twice (a headwall retreating over it in two
    seasons, nested scars): for pixels whose dominant step drops by ``min_step_m`` or more,
    the best further step within the observations before it and within those after it is
    found the same way; a further drop of at least ``min_step_m`` and 3 sigma is kept, and dh
    becomes last level - first level. Returns (dh, sigma) with unchanged values elsewhere."""
    big = (k >= 0) & (step <= -min_step_m)
    if not big.any():
        return step, np.sqrt(var_factor * (1.0 / wb + 1.0 / wa))
    first, last = mb.copy(), ma.copy()
    w_first, w_last = wb.copy(), wa.copy()
    zb, wbig, tb, kb = z[:, big], w[:, big], trusted[:, big], k[big]
    for side in ("before", "after"):
        inside = idx_n < kb[None, :] if side == "before" else idx_n >= kb[None, :]
        k2, st2, mb2, ma2, _, wb2, wa2, _ = _fit_chunk(zb, np.where(inside, wbig, 0.0), tb)
        with np.errstate(all="ignore"):
            s2 = np.sqrt(var_factor[big] * (1.0 / wb2 + 1.0 / wa2))
            keep = (k2 >= 0) & (st2 <= -min_step_m) & (-st2 >= 3.0 * s2)
        sel = np.flatnonzero(big)[keep]
        if side == "before":
            first[sel], w_first[sel] = mb2[keep], wb2[keep]
        else:
            last[sel], w_last[sel] = ma2[keep], wa2[keep]
    with np.errstate(all="ignore"):
        return last - first, np.sqrt(var_factor * (1.0 / w_first + 1.0 / w_last))


def blunders(z: np.ndarray, valid: np.ndarray, gain_m: float) -> np.ndarray:
    """Observations more than ``gain_m`` above both temporal neighbours (or the one
    neighbour, at the ends of the series): clouds. (n, P) arrays; a step down is never
    a blunder, since the observations before it agree with their predecessors."""
    n, p = z.shape
    idx = np.where(valid, np.arange(n)[:, None], -1)
    prev_idx = np.maximum.accumulate(idx, axis=0)  # last valid index <= i
    idx_r = np.where(valid, np.arange(n)[:, None], n)
    next_idx = np.minimum.accumulate(idx_r[::-1], axis=0)[::-1]  # first valid index >= i
    prev_idx = np.vstack([np.full((1, p), -1), prev_idx[:-1]])  # strictly before
    next_idx = np.vstack([next_idx[1:], np.full((1, p), n)])  # strictly after
    cols = np.arange(p)[None, :]
    prev_z = np.where(prev_idx >= 0, z[np.clip(prev_idx, 0, n - 1), cols], -np.inf)
    next_z = np.where(next_idx < n, z[np.clip(next_idx, 0, n - 1), cols], -np.inf)
    ref = np.maximum(prev_z, next_z)
    return valid & np.isfinite(ref) & (z - ref > gain_m)


def detect_steps(
    z: np.ndarray, matched: np.ndarray, dates: np.ndarray, cfg: ChangeConfig, *, chunk_px: int = 131_072,
) -> ChangeResult:
    """Dominant step per pixel of the coregistered stack ``z`` (n, H, W), NaN = no data.

    ``dates``: (n,) acquisition dates as days since 2000-01-01, ascending.
    ``matched``: (n, H, W) True for matchtag-1 observations.
    """
    n, H, Wd = z.shape
    if n and np.any(np.diff(dates) < 0):
        raise ValueError("detect_steps: dates must be ascending")
    months = np.array([(np.datetime64("2000-01-01") + np.timedelta64(int(d), "D")).astype(object).month for d in dates])
    snow_free = np.isin(months, cfg.snow_free_months)
    P = H * Wd
    zf = z.reshape(n, P)
    mf = matched.reshape(n, P)
    dh = np.full(P, np.nan, np.float32)
    sig = np.full(P, np.nan, np.float32)
    t1 = np.full(P, NODATA_DATE, np.int32)
    t2 = np.full(P, NODATA_DATE, np.int32)
    nobs = np.zeros(P, np.int16)
    s_m2 = 1.0 / cfg.sigma_matched_m**2
    s_i2 = 1.0 / cfg.sigma_interpolated_m**2
    s_s2 = 1.0 / cfg.sigma_snow_season_m**2
    idx_n = np.arange(n)[:, None]
    for start in range(0, P, chunk_px):
        sl = slice(start, min(P, start + chunk_px))
        zc = zf[:, sl].astype(np.float64)
        valid = np.isfinite(zc)
        cnt = valid.sum(axis=0)
        live = cnt >= max(2, cfg.min_dems)
        nobs[sl] = cnt.astype(np.int16)
        if not live.any():
            continue
        zc, valid, mc = zc[:, live], valid[:, live], mf[:, sl][:, live]
        with np.errstate(all="ignore"):
            med = np.nanmedian(zc, axis=0)
        zc = np.where(valid, zc - med, 0.0)  # centred: keeps the sums well conditioned
        valid &= ~blunders(zc, valid, cfg.blunder_gain_m)
        w = np.where(valid, np.where(mc, s_m2, s_i2), 0.0)
        w = np.where(snow_free[:, None], w, np.minimum(w, s_s2))  # snow-season DEMs: snow drifts
        trusted = mc & snow_free[:, None]
        w0 = w  # before outlier rejection: a second drop at the end of a series is not an outlier
        for it in range(cfg.outlier_iterations + 1):
            k, step, mb, ma, ssr, wb, wa, nt = _fit_chunk(zc, w, trusted)
            if it == cfg.outlier_iterations:
                break
            fit = np.where(idx_n < k[None, :], mb[None, :], ma[None, :])
            u = (zc - fit) * np.sqrt(w)  # residuals in units of each observation's sigma
            used = w > 0
            absu = np.where(used, np.abs(u), np.nan)
            with np.errstate(all="ignore"):
                scale = np.maximum(1.0, 1.4826 * np.nanmedian(absu, axis=0))
            out = used & (np.abs(u) > cfg.outlier_nsigma * scale[None, :]) & (k[None, :] >= 0)
            if not out.any():
                break
            w = np.where(out, 0.0, w)
        has = k >= 0
        dof = np.maximum(nt - 2, 1)
        var_factor = np.maximum(np.where(nt > 2, ssr / dof, 1.0), 1.0)
        with np.errstate(all="ignore"):
            s = np.sqrt(var_factor * (1.0 / wb + 1.0 / wa))
        used = w > 0
        if cfg.secondary_step_m > 0:
            step, s = _secondary_steps(zc, w0, trusted, k, step, mb, ma, wb, wa, var_factor, idx_n,
                                       cfg.secondary_step_m)
        # t1: last used observation before k; t2: observation k ...
        before = used & (idx_n < k[None, :])
        last_before = np.where(before.any(axis=0), n - 1 - np.argmax(before[::-1], axis=0), 0)
        kk = np.clip(k, 0, n - 1)
        # ... unless observations rejected as outliers lie between them: a headwall caught
        # mid-pixel shows part of the drop. The step happened before the first of them
        # that is past halfway to the new level, and after the last that is not.
        half = mb + step / 2.0
        between = valid & ~used & (idx_n > last_before[None, :]) & (idx_n < k[None, :])
        past = between & ((zc - half[None, :]) * np.sign(step)[None, :] > 0)
        kk = np.where(past.any(axis=0), np.argmax(past, axis=0), kk)
        not_past = between & ~past & (idx_n < kk[None, :])
        last_before = np.where(not_past.any(axis=0), n - 1 - np.argmax(not_past[::-1], axis=0), last_before)
        out_dh = np.where(has, step, np.nan).astype(np.float32)
        out_s = np.where(has, s, np.nan).astype(np.float32)
        live_idx = np.flatnonzero(live) + start
        dh[live_idx] = out_dh
        sig[live_idx] = out_s
        t1[live_idx] = np.where(has, dates[last_before], NODATA_DATE).astype(np.int32)
        t2[live_idx] = np.where(has, dates[kk], NODATA_DATE).astype(np.int32)
        nobs[live_idx] = used.sum(axis=0).astype(np.int16)
    dh, sig = dh.reshape(H, Wd), sig.reshape(H, Wd)
    t1, t2, nobs = t1.reshape(H, Wd), t2.reshape(H, Wd), nobs.reshape(H, Wd)
    conf = confidence_flag(dh, sig, t1, t2, nobs, cfg)
    return ChangeResult(dh, sig, t1, t2, nobs, conf)


def confidence_flag(dh, sig, t1, t2, nobs, cfg: ChangeConfig) -> np.ndarray:
    """1 where the step is confident (see module docstring), 0 where not, 255 undefined."""
    defined = np.isfinite(dh)
    t_event = np.where(defined, (t1.astype(np.float64) + t2) / 2.0, np.nan)
    # 3x3 standard deviation of event time, NaN-aware
    ones = defined.astype(np.float64)
    te = np.nan_to_num(t_event)
    cnt = ndimage.uniform_filter(ones, 3, mode="constant")
    with np.errstate(all="ignore"):
        mean = ndimage.uniform_filter(te, 3, mode="constant") / cnt
        mean2 = ndimage.uniform_filter(te * te, 3, mode="constant") / cnt
        spread = np.sqrt(np.maximum(mean2 - mean * mean, 0.0))
        ok = (
            defined
            & (np.abs(dh) >= cfg.confidence_nsigma * sig)
            & (nobs >= cfg.confidence_min_obs)
            & (sig < cfg.confidence_max_sigma_m)
            & (spread < cfg.confidence_max_time_spread_days)
        )
    return np.where(defined, ok.astype(np.uint8), 255).astype(np.uint8)
