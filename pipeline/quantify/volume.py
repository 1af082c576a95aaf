"""Volume and its uncertainty from spatially correlated elevation-change errors.

The volume lost inside a polygon is V = -A_px * sum(dh) (m3, positive for a loss). Its
error is not the pixel error shrunk by sqrt(n): DEM errors are correlated over tens to
hundreds of metres, so neighbouring pixels err together. Following Rolstad et al. (2009,
J. Glaciol. 55) and Hugonnet et al. (2022, IEEE JSTARS 15), the error of the mean dh over
an area A is

    sigma_mean^2 = nugget * A_px / A + integral_0^2R C(d) f_R(d) dd,

with C(d) = sill - gamma(d) the covariance of a variogram fitted to dh on stable ground (a
nugget plus a short- and a long-range spherical model, Hugonnet et al. 2022), and f_R the
density of the distance between two random points of a disk of the same area (radius R).
Then sigma_V = A * sigma_mean. Dai et al. (2025) used the same double sum over pixel pairs
with a periodogram autocorrelation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import curve_fit

from pipeline.dem.change import NODATA_DATE
from pipeline.quantify.climate import season_coverage, seasons_covered, thaw_season_of


@dataclass(frozen=True)
class Variogram:
    """A nugget plus the sum of two spherical models, a short- and a long-range one
    (Hugonnet et al. 2022: DEM errors hold correlations at several scales, and a single
    range fitted to both understates the long-range part that dominates the error of a
    large area's mean). gamma(d) = nugget + psill * sph(d / range_m) + psill_long *
    sph(d / range_long_m), sph(q) = 1.5 q - 0.5 q^3 for q < 1, else 1."""

    nugget: float  # m2 (uncorrelated variance)
    psill: float  # m2 (correlated variance, short range)
    range_m: float
    n_pairs: int = 0
    psill_long: float = 0.0  # m2 (correlated variance, long range)
    range_long_m: float = 1.0

    @staticmethod
    def _sph(d, r):
        q = np.clip(np.asarray(d, float) / max(r, 1e-9), 0, 1)
        return 1.5 * q - 0.5 * q**3

    def gamma(self, d: np.ndarray) -> np.ndarray:
        return self.nugget + self.psill * self._sph(d, self.range_m) + self.psill_long * self._sph(d, self.range_long_m)

    def covariance(self, d: np.ndarray) -> np.ndarray:
        """Correlated covariance at lag d > 0 (the nugget only acts at d = 0)."""
        return self.psill + self.psill_long - (self.gamma(d) - self.nugget)


def empirical_variogram(dh: np.ndarray, stable: np.ndarray, res: float, *, max_lag_m: float, n_pairs: int,
                        n_bins: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Semivariance of dh between random pairs of stable pixels, binned by distance.

    Returns (bin centres m, semivariance m2, pair counts). Pairs are drawn around random
    anchors within ``max_lag_m`` so that short lags are well sampled.
    """
    rng = np.random.default_rng(seed)
    rr, cc = np.nonzero(stable & np.isfinite(dh))
    if rr.size < 100:
        return np.array([]), np.array([]), np.array([])
    a = rng.integers(0, rr.size, n_pairs)
    # partner: a random offset with log-uniform distance (short lags as well sampled as long)
    dist_px = np.exp(rng.uniform(np.log(1.0), np.log(max_lag_m / res), n_pairs))
    ang = rng.uniform(0, 2 * np.pi, n_pairs)
    r2 = np.round(rr[a] + dist_px * np.sin(ang)).astype(int)
    c2 = np.round(cc[a] + dist_px * np.cos(ang)).astype(int)
    ok = (r2 >= 0) & (r2 < dh.shape[0]) & (c2 >= 0) & (c2 < dh.shape[1])
    r1, c1, r2, c2 = rr[a][ok], cc[a][ok], r2[ok], c2[ok]
    ok = stable[r2, c2] & np.isfinite(dh[r2, c2])
    r1, c1, r2, c2 = r1[ok], c1[ok], r2[ok], c2[ok]
    d = np.hypot(r2 - r1, c2 - c1) * res
    sv = 0.5 * (dh[r1, c1].astype(float) - dh[r2, c2]) ** 2
    edges = np.geomspace(res * 0.99, max_lag_m, n_bins + 1)
    k = np.digitize(d, edges) - 1
    good = (k >= 0) & (k < n_bins)
    counts = np.bincount(k[good], minlength=n_bins)
    sums = np.bincount(k[good], weights=sv[good], minlength=n_bins)
    centres = np.sqrt(edges[:-1] * edges[1:])
    with np.errstate(all="ignore"):
        gamma = sums / counts
    keep = counts >= 30
    return centres[keep], gamma[keep], counts[keep]


def fit_variogram(lags: np.ndarray, gamma: np.ndarray, counts: np.ndarray) -> Variogram:
    """Weighted least-squares fit (weights: pair counts) of a nugget plus a short- and a
    long-range spherical model, the short range below the geometric middle of the lags and
    the long one above it (xdem.spatialstats.fit_sum_model_variogram fits the same sum;
    that module needs scikit-gstat, which pins scipy below the version used here). Falls
    back to one range where the two-range fit fails."""
    if lags.size < 3:
        var = float(np.nanmax(gamma)) if gamma.size else 0.0
        return Variogram(var, 0.0, 1.0, int(counts.sum()) if counts.size else 0)
    top = float(np.max(gamma))
    n = int(counts.sum())
    if not top > 0:  # no variation at all on the stable ground
        return Variogram(0.0, 0.0, 1.0, n)
    w = 1 / np.sqrt(counts)
    mid = float(np.sqrt(lags[0] * lags[-1]))
    if lags.size >= 6:
        def model2(d, nugget, psill, r1, psill2, r2):
            return Variogram(nugget, psill, r1, 0, psill2, r2).gamma(d)

        p0 = (float(gamma[0]) * 0.5, top * 0.25, float(np.sqrt(lags[0] * mid)), top * 0.25, float(lags[-1]))
        bounds = ([0.0, 0.0, lags[0], 0.0, mid], [top * 2, top * 2, mid, top * 2, lags[-1] * 2])
        try:
            (nug, ps, r1, ps2, r2), _ = curve_fit(model2, lags, gamma, p0=p0, bounds=bounds, sigma=w, maxfev=5000)
            return Variogram(float(nug), float(ps), float(r1), n, float(ps2), float(r2))
        except RuntimeError:
            pass

    def model(d, nugget, psill, rng_):
        return Variogram(nugget, psill, rng_).gamma(d)

    p0 = (float(gamma[0]) * 0.5, top * 0.5, float(lags[len(lags) // 2]))
    bounds = ([0.0, 0.0, lags[0]], [top * 2, top * 2, lags[-1] * 2])
    try:
        (nug, ps, r), _ = curve_fit(model, lags, gamma, p0=p0, bounds=bounds, sigma=w, maxfev=5000)
    except RuntimeError:
        nug, ps, r = top, 0.0, float(lags[0])
    return Variogram(float(nug), float(ps), float(r), n)


def _disk_distance_density(d: np.ndarray, radius: float) -> np.ndarray:
    """Density of the distance between two uniform random points of a disk."""
    q = np.clip(d / (2 * radius), 0, 1)
    return (4 * d / (np.pi * radius**2)) * (np.arccos(q) - q * np.sqrt(1 - q * q))


def sigma_mean_dh(area_m2: float, res: float, vg: Variogram, n_steps: int = 400) -> float:
    """1-sigma error (m) of the mean dh over an area, from the variogram (see module doc)."""
    if area_m2 <= 0:
        return float("nan")
    radius = np.sqrt(area_m2 / np.pi)
    d = np.linspace(0, 2 * radius, n_steps + 1)[1:]
    corr = np.trapezoid(vg.covariance(d) * _disk_distance_density(d, radius), d)
    white = (vg.nugget + 0.0) * res * res / area_m2
    return float(np.sqrt(max(corr, 0.0) + white))


def volume_and_sigma(dh: np.ndarray, mask: np.ndarray, res: float, vg: Variogram) -> tuple[float, float]:
    """Volume lost (m3, positive for a loss) inside ``mask`` and its 1-sigma error."""
    px = res * res
    area = float(mask.sum()) * px
    v = float(-np.nansum(dh[mask]) * px)
    return v, area * sigma_mean_dh(area, res, vg)


def censored_shares(base: np.ndarray, loss: np.ndarray, size: np.ndarray, n_iter: int = 500, tol: float = 1e-6
                    ) -> np.ndarray:
    """Share losses known only to lie within ranges of time bins among those bins.

    ``base`` (P, K): row p's prior weight on bin k, 0 outside its range (each row must hold
    some); ``loss`` (P,): the loss of each range; ``size`` (K,): each bin's length (thaw
    seasons; a bin of size 0 keeps a fixed rate). A range's loss is shared among its bins in
    proportion to base x each bin's loss rate (loss per ``size``), the rates estimated from
    the whole allocation: Turnbull's
    (1976) self-consistent estimator for interval-censored event times, here the time each
    pixel dropped. It starts from one activity everywhere (sharing by ``base`` alone, which is
    also the answer when the ranges say nothing more) and moves a wide range's loss to the
    bins that the narrower ranges show active: pixels bracketed 2010-2012 by a gap in their
    record, on a slump whose pixels seen every year all dropped in 2012, are dated 2012 rather
    than spread over 2010-2012. Rows of no or negative loss (pixels that rose) are shared by
    the rates but do not set them. Returns the (P, K) losses; each row sums to its loss."""
    base = np.asarray(base, float)
    loss = np.asarray(loss, float)
    if base.size == 0:
        return base.copy()
    size = np.asarray(size, float)
    pos, sized = loss > 0, size > 0
    if not pos.any():
        s = base
        return s / s.sum(1, keepdims=True) * loss[:, None]
    bp, lp = base[pos], loss[pos, None]
    size_or_1 = np.where(sized, size, 1.0)

    def step(rate: np.ndarray) -> np.ndarray:  # one self-consistency (EM) update, scale kept
        s = bp * rate
        got = (s / np.maximum(s.sum(1, keepdims=True), 1e-300) * lp).sum(0)
        new = np.where(sized, got / size_or_1, rate)
        return new * (rate[sized].sum() / max(new[sized].sum(), 1e-300))

    # the update converges linearly, as slowly as the share of loss the wide ranges hold; SQUAREM
    # (Varadhan & Roland 2008) extrapolates along it, floored above 0 so that no bin is lost to an
    # overshoot, and the residual of the plain update decides when it has converged
    rate = np.ones(base.shape[1])
    for _ in range(n_iter):
        r1 = step(rate)
        r2 = step(r1)
        d1, d2 = r1 - rate, r2 - 2 * r1 + rate
        nv = np.sqrt((d2 * d2).sum())
        alpha = -np.sqrt((d1 * d1).sum()) / nv if nv > 0 else -1.0
        alpha = min(alpha, -1.0)
        trial = np.maximum(rate - 2 * alpha * d1 + alpha * alpha * d2, 1e-12 * r2.max())
        new = step(trial)
        done = np.max(np.abs(step(new) - new)) <= tol * np.max(new)
        rate = new
        if done:
            break
    rate[rate < tol * rate.max()] = 0.0  # the estimator empties bins only in the limit: empty them now
    s = base * rate
    tot = s.sum(1, keepdims=True)
    s = np.where(tot > 0, s, base)  # a risen pixel whose bins all lost nothing keeps its prior share
    return s / s.sum(1, keepdims=True) * loss[:, None]


def yearly_loss(dh: np.ndarray, t1: np.ndarray, t2: np.ndarray, mask: np.ndarray, res: float) -> pd.DataFrame:
    """Volume lost per thaw season, binned on the time of change (Dai et al. 2025).

    A pixel's loss happened between its t1 and t2 (days since 2000-01-01), in one of the
    thaw seasons (20 Jun - 22 Sep) that interval covers by at least a quarter (t2's season
    when it covers none that much). It is shared among them by the loss rate the polygon's
    pixels together show in each (:func:`censored_shares`; evenly when they show nothing
    more). So the yearly volumes add up to the total, a gap in the record does not pile two
    summers into one, and pixels bracketed by a gap are dated by their neighbours seen inside it.

    Returns a frame indexed by season year with ``volume_m3`` (positive for loss) and
    ``area_m2`` (the area that changed that season, shared the same way), sorted by year.
    """

    ok = mask & np.isfinite(dh) & (t2 != NODATA_DATE) & (t1 != NODATA_DATE)
    if not ok.any():
        return pd.DataFrame({"volume_m3": [], "area_m2": []}, index=pd.Index([], dtype=int, name="year"))
    px = res * res
    pairs, inverse = np.unique(np.stack([t1[ok], t2[ok]], axis=1), axis=0, return_inverse=True)
    inverse = inverse.ravel()
    loss = np.bincount(inverse, weights=-dh[ok].astype(float) * px, minlength=len(pairs))
    area = np.bincount(inverse, minlength=len(pairs)) * px
    spans = [seasons_covered(a, b) or [int(thaw_season_of(np.array([b]))[0])] for a, b in pairs]
    idx = sorted({y for years in spans for y in years})
    col = {y: k for k, y in enumerate(idx)}
    base = np.zeros((len(pairs), len(idx)))
    for p, years in enumerate(spans):
        base[p, [col[y] for y in years]] = 1.0
    vol = censored_shares(base, loss, np.ones(len(idx)))
    share = np.divide(vol, loss[:, None], out=base / base.sum(1, keepdims=True), where=loss[:, None] != 0)
    out = pd.DataFrame({"volume_m3": vol.sum(0), "area_m2": (share * area[:, None]).sum(0)},
                       index=pd.Index(idx, dtype=int, name="year"))
    return out[out.area_m2 > 0]  # a season the record shows inactive has no row


def interval_losses(dh: np.ndarray, t1: np.ndarray, t2: np.ndarray, mask: np.ndarray, res: float,
                    epochs=(), min_seasons: float = 0.5) -> pd.DataFrame:
    """Volume lost between successive DEM epochs inside ``mask``.

    ``epochs``: dates (days since 2000-01-01) of the record's DEMs; the pixels' own t1 and
    t2 are added. A pixel lost its ``-dh`` between its t1 and t2; when that span holds more
    than one interval between epochs, the loss is shared among them by the thaw season
    (20 Jun - 22 Sep) each covers times the loss rate the polygon's pixels together show in
    each (:func:`censored_shares`): a slump that began in 2012 is not given a share of 2010
    and 2011 by its pixels whose record has a gap then. Intervals are taken between the earliest t1 and the
    latest t2 of the pixels, and merged forward until each covers at least ``min_seasons``
    of thaw season (two DEMs a day apart resolve nothing between them).

    Returns a frame with one row per interval: ``start`` and ``end`` (days since
    2000-01-01), ``seasons`` (thaw-season equivalents covered), ``coverage`` (season year ->
    fraction of it covered) and ``volume_m3`` (positive for loss); the volumes add up to
    the polygon's volume over the pixels with dates.
    """

    cols = ["start", "end", "seasons", "coverage", "volume_m3"]
    ok = mask & np.isfinite(dh) & (t2 != NODATA_DATE) & (t1 != NODATA_DATE) & (t2 > t1)
    if not ok.any():
        return pd.DataFrame(columns=cols)
    a_px, b_px = t1[ok].astype(float), t2[ok].astype(float)
    lo, hi = a_px.min(), b_px.max()
    e = np.unique(np.concatenate([a_px, b_px, np.asarray(epochs, float)]))
    e = e[(e >= lo) & (e <= hi)]
    cov = [season_coverage(e[k], e[k + 1]) for k in range(len(e) - 1)]
    w = np.array([sum(c.values()) for c in cov])
    pairs, inverse = np.unique(np.stack([a_px, b_px], axis=1), axis=0, return_inverse=True)
    px_loss = np.bincount(inverse.ravel(), weights=-dh[ok].astype(float) * res * res, minlength=len(pairs))
    base = np.zeros((len(pairs), len(e) - 1))
    for p, (a, b) in enumerate(pairs):
        k0, k1 = np.searchsorted(e, a), np.searchsorted(e, b)
        base[p, k0:k1] = w[k0:k1] if w[k0:k1].sum() > 0 else 1.0
    loss = censored_shares(base, px_loss, w).sum(0)
    rows, acc_v, acc_c, start = [], 0.0, {}, e[0]
    for k in range(len(e) - 1):
        acc_v += loss[k]
        for yr, c in cov[k].items():
            acc_c[yr] = acc_c.get(yr, 0.0) + c
        if sum(acc_c.values()) >= min_seasons or k == len(e) - 2:
            rows.append((start, e[k + 1], sum(acc_c.values()), acc_c, acc_v))
            acc_v, acc_c, start = 0.0, {}, e[k + 1]
    if len(rows) > 1 and rows[-1][2] < min_seasons:  # a short tail joins the interval before
        (s0, _, n0, c0, v0), (_, e1, n1, c1, v1) = rows[-2], rows[-1]
        rows[-2:] = [(s0, e1, n0 + n1, {yr: c0.get(yr, 0.0) + c1.get(yr, 0.0) for yr in {*c0, *c1}}, v0 + v1)]
    return pd.DataFrame(rows, columns=cols)


def yearly_volumes(dh: np.ndarray, t1: np.ndarray, t2: np.ndarray, mask: np.ndarray, res: float) -> pd.Series:
    """Volume lost per thaw season (m3, index: season year); see :func:`yearly_loss`."""
    return yearly_loss(dh, t1, t2, mask, res)["volume_m3"]
