"""Physical evidence that a loss cluster is a thaw slump, and a classifier on it.

A retrogressive thaw slump is progressive loss cut by a headwall retreating upslope
(Lantz & Kokelj 2008; Kokelj et al. 2013): the time of change grows upslope across the
scar, the loss is deepest under the headwall and the rim above it is steep, the scar sits
on a slope with its debris below, and it is seen by several acquisitions on each side of
the change. What is often mistaken for one is not:

* a lake that drains (one event: no spread of t2; a closed, flat-floored depression on
  flat ground; loss deepest in the middle, not upslope);
* an acquisition artefact (a cloud or matching blob left in the first or last strip:
  supported by one epoch; loss unrelated to the terrain);
* thermokarst subsidence (shallow, broad, flat ground), gullies and river banks
  (progressive, but long and narrow), detachments (one event, shallow).

:func:`cluster_features` measures these per connected loss cluster (the inventory's
unit, the connected active area) from the change rasters alone - never from a water
flag; :class:`EvidenceModel` is a logistic regression on them (coefficients in
``pipeline/models/evidence.json``), fitted by :func:`fit` on candidates of generated scene
families matched to their truth.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.stats import rankdata

from pipeline.detection import weights

FEATURES = (
    "ev_log_area", "ev_max_loss_m", "ev_t2_spread_log", "ev_t2_upslope_corr", "ev_depth_upslope_corr",
    "ev_headwall_ratio", "ev_rim_slope_deg", "ev_ground_slope_deg", "ev_floor_relief_ratio", "ev_closed_rim",
    "ev_elongation", "ev_support_fraction", "ev_confident_fraction", "ev_gain_ratio", "ev_loss_cv",
    "ev_criterion_2", "ev_criterion_3",
)
#: evidence written beside :data:`FEATURES` but not an input of the classifier: the drained-lake
#: veto's water-level test (:func:`drained_lake`)
VETO_FEATURES = ("ev_pre_surface_slope_deg", "ev_pre_surface_nmad_m", "ev_pre_level_share")
#: features derived from the candidate's ``criteria`` count (the reference study's criteria
#: 2, progressive retreat, and 3, loss upslope of and larger than its debris; each needs the ones before)
CRITERIA_FEATURES = {"ev_criterion_2": 2, "ev_criterion_3": 3}


def criteria_features(criteria) -> dict[str, np.ndarray]:
    """``ev_criterion_2`` / ``ev_criterion_3`` (0 or 1) from the number of criteria passed."""
    c = np.asarray(criteria, float)
    return {name: (c >= k).astype(float) for name, k in CRITERIA_FEATURES.items()}

MODEL_FILE = weights.models_dir() / weights.EVIDENCE_FILE  # package data (pipeline/models/)


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation; 0 when undefined."""
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 8:
        return 0.0
    ra = rankdata(a[ok])
    rb = rankdata(b[ok])
    if ra.std() == 0 or rb.std() == 0:
        return 0.0
    return float(np.corrcoef(ra, rb)[0, 1])


def _slope_deg(z: np.ndarray, res: float) -> np.ndarray:
    gy, gx = np.gradient(z, res)
    return np.degrees(np.arctan(np.hypot(gx, gy)))


def cluster_features(dh: np.ndarray, t2: np.ndarray, elev: np.ndarray, conf: np.ndarray, support: np.ndarray,
                     mine: np.ndarray, gain: np.ndarray, res: float) -> dict[str, float]:
    """Evidence of one loss cluster ``mine`` (a boolean box of the mosaic), from the
    change rasters over the same box: ``dh`` (m), ``t2`` (days, NaN undefined), ``elev``
    (the newest surface, m), ``conf`` (confident pixels), ``support`` (min(n_before,
    n_after) epochs, -1 undefined), ``gain`` (debris pixels near the cluster)."""
    px = res * res
    d = np.where(np.isfinite(dh), dh, 0.0)
    loss = -d[mine]
    before = elev - d  # the surface before the change
    area = float(mine.sum() * px)
    e_in = before[mine]
    fin = np.isfinite(e_in)
    t = t2[mine]
    # time grows upslope? depth grows upslope?
    t_up = _corr(e_in, t)
    d_up = _corr(e_in, loss)
    tt = t[np.isfinite(t)]
    spread = float(np.percentile(tt, 90) - np.percentile(tt, 10)) if tt.size else 0.0
    # headwall: mean loss of the upper third against the lower third (pre-change elevation)
    if fin.sum() >= 9:
        lo, hi = np.percentile(e_in[fin], [33, 67])
        upper = loss[fin & (e_in >= hi)]
        lower = loss[fin & (e_in <= lo)]
        headwall = float(np.log((upper.mean() + 0.1) / (lower.mean() + 0.1))) if upper.size and lower.size else 0.0
    else:
        headwall = 0.0
    # the rim: pixels just outside the cluster; its upper half's slope on the new surface
    ring = ndimage.binary_dilation(mine, iterations=3) & ~mine
    outer = ndimage.binary_dilation(mine, iterations=12) & ~ndimage.binary_dilation(mine, iterations=4)
    slope_new = _slope_deg(np.where(np.isfinite(elev), elev, np.nanmean(elev)), res)
    slope_old = _slope_deg(ndimage.gaussian_filter(np.where(np.isfinite(before), before, np.nanmean(before)), 3.0), res)
    ring_e = before[ring]
    if ring.any() and np.isfinite(ring_e).any():
        top = ring & (before >= np.nanpercentile(ring_e, 50))
        rim_slope = float(np.nanmean(slope_new[top])) if top.any() else 0.0
    else:
        rim_slope = 0.0
    ground_slope = float(np.nanmedian(slope_old[outer])) if outer.any() else 0.0
    # floor: relief of the new surface inside against the depth; a closed rim = the
    # cluster's floor lies below all of its surroundings (a basin, not an open scar)
    new_in = elev[mine]
    new_in = new_in[np.isfinite(new_in)]
    depth = float(np.median(loss)) if loss.size else 0.0
    relief = float(np.percentile(new_in, 90) - np.percentile(new_in, 10)) if new_in.size else 0.0
    floor_ratio = float(np.log((relief + 0.1) / (depth + 0.1)))
    out_e = elev[ring]
    out_e = out_e[np.isfinite(out_e)]
    closed = float(np.mean(out_e > np.percentile(new_in, 90))) if out_e.size and new_in.size else 0.0
    # shape: elongation from second moments
    rr, cc = np.nonzero(mine)
    if rr.size >= 3:
        cov = np.cov(np.c_[rr, cc].T.astype(float))
        w = np.sort(np.linalg.eigvalsh(cov))
        elong = float(np.log(np.sqrt(max(w[1], 1e-6) / max(w[0], 0.25))))
    else:
        elong = 0.0
    pre_slope, pre_nmad = _plane_fit(before, mine, res)
    pre_level = _level_share(before, mine)
    sup = support[mine]
    sup_frac = float(np.mean(sup >= 2)) if sup.size else 0.0
    gain_m3 = float(d[gain].sum() * px) if gain.any() else 0.0
    loss_m3 = float(loss.sum() * px)
    return {
        "ev_log_area": float(np.log10(max(area, 1.0))),
        "ev_max_loss_m": float(loss.max()) if loss.size else 0.0,
        "ev_t2_spread_log": float(np.log1p(max(spread, 0.0) / 30.0)),
        "ev_t2_upslope_corr": t_up,
        "ev_depth_upslope_corr": d_up,
        "ev_headwall_ratio": headwall,
        "ev_rim_slope_deg": rim_slope,
        "ev_ground_slope_deg": ground_slope,
        "ev_floor_relief_ratio": floor_ratio,
        "ev_closed_rim": closed,
        "ev_elongation": elong,
        "ev_support_fraction": sup_frac,
        "ev_confident_fraction": float(conf[mine].mean()) if mine.any() else 0.0,
        "ev_gain_ratio": float(np.log1p(gain_m3 / max(loss_m3, 1.0) * 10.0)),
        "ev_loss_cv": float(loss.std() / max(loss.mean(), 1e-6)) if loss.size else 0.0,
        "ev_pre_surface_slope_deg": pre_slope,
        "ev_pre_surface_nmad_m": pre_nmad,
        "ev_pre_level_share": pre_level,
    }


#: the height band (m) of :func:`_level_share`: a water surface in a DEM lies within it
LEVEL_BAND_M = 0.5


def _interior(mine: np.ndarray, z: np.ndarray) -> np.ndarray:
    """The unit 3 pixels in from its edge (which holds shore and rim pixels of the
    surroundings), or the whole unit when that leaves fewer than 50 finite pixels."""
    inner = ndimage.binary_erosion(mine, iterations=3)
    return inner if np.count_nonzero(inner & np.isfinite(z)) >= 50 else mine


def _level_share(z: np.ndarray, mine: np.ndarray) -> float:
    """The largest share of the unit's interior whose ``z`` lies within one height band of
    :data:`LEVEL_BAND_M`: near 1 where the surface before the change was a water level (a lake
    that drained, even one dammed on sloping ground with some shore in the unit), small where
    it was a hillside (a band meets it along one contour). 0 with fewer than 9 pixels."""
    v = np.sort(z[_interior(mine, z) & np.isfinite(z)].astype(float))
    if v.size < 9:
        return 0.0
    within = np.searchsorted(v, v + LEVEL_BAND_M, side="right") - np.arange(v.size)
    return float(within.max() / v.size)


def _plane_fit(z: np.ndarray, mine: np.ndarray, res: float) -> tuple[float, float]:
    """Slope (degrees) and robust spread (NMAD of the residuals, m) of the plane through ``z``
    over the interior of ``mine`` (3 pixels in from its edge, where the unit is wide enough; the
    edge holds shore and rim pixels of the surroundings). Least squares, then again without the
    residuals beyond 3 NMAD. On the surface before the change, a lake's is its water level:
    horizontal and smooth whatever the ground's slope, where a slump's is the hillside it cut
    into. (90, 90) when fewer than 9 finite pixels."""
    rr, cc = np.nonzero(_interior(mine, z) & np.isfinite(z))
    if rr.size < 9:
        return 90.0, 90.0
    x, y, v = cc * res, rr * res, z[rr, cc].astype(float)
    a = np.c_[x - x.mean(), y - y.mean(), np.ones_like(x, dtype=float)]
    keep = np.ones(v.size, bool)
    for _ in range(2):
        coef, *_ = np.linalg.lstsq(a[keep], v[keep], rcond=None)
        resid = v - a @ coef
        nmad = 1.4826 * float(np.median(np.abs(resid[keep] - np.median(resid[keep]))))
        keep = np.abs(resid) <= max(3.0 * nmad, 1e-6)
        if keep.sum() < 9:
            break
    return float(np.degrees(np.arctan(np.hypot(coef[0], coef[1])))), nmad


def drained_lake(table, cfg) -> np.ndarray:
    """Candidates that look like a drained lake, from the evidence columns alone: never from a
    water flag, which misses many lakes and no longer marks one once it has drained. On flat
    ground, with a change time that does not grow upslope, either a flat-floored basin, or a
    closed basin with a low rim (a lake whose floor kept a channel or a residual pond is not
    flat, but it has no headwall and its surroundings stand above it all round); and on any
    ground, a unit whose surface before the change was a water level (a horizontal, smooth
    plane: ``ev_pre_surface_slope_deg``, ``ev_pre_surface_nmad_m``; or most of it at one
    height: ``ev_pre_level_share``), where a slump cut into a hillside.
    ``cfg``: :class:`pipeline.config.DetectionConfig`."""
    if not len(table):
        return np.zeros(0, bool)
    floor = np.asarray(table["ev_floor_relief_ratio"], float)
    t_up = np.asarray(table["ev_t2_upslope_corr"], float)
    slope = np.asarray(table["ev_ground_slope_deg"], float)
    closed = np.asarray(table["ev_closed_rim"], float)
    rim = np.asarray(table["ev_rim_slope_deg"], float)
    basin = (floor <= cfg.lake_max_floor_relief_ratio) | ((closed >= cfg.lake_min_closed_rim)
                                                          & (rim <= cfg.lake_max_rim_slope_deg))
    flat_ground_lake = basin & (slope <= cfg.lake_max_ground_slope_deg)
    # a water level before the change: horizontal and smooth, on flat or sloping ground
    nan = np.full(len(table), np.nan)
    pre_slope = np.asarray(table.get("ev_pre_surface_slope_deg", nan), float)
    pre_nmad = np.asarray(table.get("ev_pre_surface_nmad_m", nan), float)
    level = np.asarray(table.get("ev_pre_level_share", nan), float)
    water_level = (((pre_slope <= cfg.lake_max_pre_surface_slope_deg) & (pre_nmad <= cfg.lake_max_pre_surface_nmad_m))
                   | (level >= cfg.lake_min_pre_level_share))
    return (flat_ground_lake | water_level) & (t_up <= cfg.lake_max_t2_upslope_corr)


@dataclass
class EvidenceModel:
    """A logistic regression P(slump | evidence) on standardised :data:`FEATURES`."""

    features: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    threshold: float = 0.5
    meta: dict | None = None

    def probability(self, table) -> np.ndarray:
        """P(slump) per row of a frame holding the feature columns (missing -> mean; the
        criterion features are derived from ``criteria`` where absent)."""
        derived = criteria_features(table["criteria"]) if "criteria" in table else {}

        def column(f, m):
            if f in table:
                return np.asarray(table[f], float)
            return derived.get(f, np.full(len(table), m))

        X = np.column_stack([column(f, m) for f, m in zip(self.features, self.mean)]) if len(table) \
            else np.zeros((0, len(self.features)))
        X = np.where(np.isfinite(X), X, self.mean)
        z = ((X - self.mean) / self.scale) @ self.coef + self.intercept
        return 1.0 / (1.0 + np.exp(-z))

    def to_json(self) -> dict:
        return {"kind": "logistic", "features": list(self.features), "mean": self.mean.tolist(),
                "scale": self.scale.tolist(), "coef": self.coef.tolist(), "intercept": self.intercept,
                "threshold": self.threshold, "meta": self.meta or {}}

    @classmethod
    def from_json(cls, d: dict) -> "EvidenceModel":
        if d.get("kind") != "logistic":
            raise ValueError(f"evidence model: unknown kind {d.get('kind')!r}")
        return cls(tuple(d["features"]), np.asarray(d["mean"], float), np.asarray(d["scale"], float),
                   np.asarray(d["coef"], float), float(d["intercept"]), float(d.get("threshold", 0.5)), d.get("meta"))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".part")
        tmp.write_text(json.dumps(self.to_json(), indent=1))
        tmp.replace(path)
        weights.record(path)
        return path

    @classmethod
    def load(cls, path: str | Path | None = None) -> "EvidenceModel":
        path = weights.verify(Path(path) if path else MODEL_FILE)
        try:
            return cls.from_json(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError, KeyError) as exc:
            raise ValueError(f"{path}: not a readable evidence model ({exc})") from exc


def fit(X: np.ndarray, y: np.ndarray, *, l2: float = 1.0, features: tuple[str, ...] = FEATURES,
        weights: np.ndarray | None = None, iterations: int = 50) -> EvidenceModel:
    """L2-regularised logistic regression by Newton's method (IRLS) on standardised X.
    ``weights`` per sample (e.g. to balance scene families)."""
    X = np.asarray(X, float)
    y = np.asarray(y, float)
    w_s = np.ones(len(y)) if weights is None else np.asarray(weights, float)
    mean = np.nanmean(X, 0)
    X = np.where(np.isfinite(X), X, mean)
    scale = X.std(0)
    scale[scale < 1e-9] = 1.0
    Z = np.c_[(X - mean) / scale, np.ones(len(y))]
    beta = np.zeros(Z.shape[1])
    R = np.eye(Z.shape[1]) * l2
    R[-1, -1] = 0.0
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(Z @ beta)))
        g = Z.T @ (w_s * (p - y)) + R @ beta
        Hm = (Z * (w_s * p * (1 - p))[:, None]).T @ Z + R
        step = np.linalg.solve(Hm + 1e-9 * np.eye(len(beta)), g)
        beta -= step
        if np.abs(step).max() < 1e-8:
            break
    return EvidenceModel(tuple(features), mean, scale, beta[:-1], float(beta[-1]))
