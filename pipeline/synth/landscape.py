"""The true landscape of a synthetic site and how it changes through time.

A site is a block of 2 km cells on the EPSG:3413 work grid. Its terrain is a
plateau with fractal relief cut by sinuous incised valleys (20-45 m deep), with
lakes on the plateau. Change comes from:

* **Retrogressive thaw slumps** on valley sides: an amphitheatre scar whose
  headwall retreats upslope during each thaw season (20 Jun - 22 Sep). The scar is
  star-shaped about its mouth, so its growth is a nested family of shapes and
  every scar pixel has one excavation time. Yearly volume losses follow the
  site's July-August temperature anomaly for temperature-driven slumps and an
  independent random sequence for the others; some slumps initiate mid-record;
  part of the material is deposited as a debris lobe below the mouth.
* **Look-alikes**: a lake that drains in one event, an active-layer detachment
  (a one-off shallow slide with its toe deposit), broad slow thermokarst
  subsidence, and (in :mod:`pipeline.synth.strips`) spring snow drifts.

Everything here is truth: the pipeline never reads it. Times are float days
since 2000-01-01; lengths in metres; grids are north-up 2 m rasters.
"""

from __future__ import annotations

import abc
import datetime as dt
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from data_products import timebase

EPOCH = timebase.EPOCH
SEASON_START = (6, 20)  # thaw season: 20 June ...
SEASON_END = (9, 22)  # ... to 22 September


def days(d: dt.date) -> float:
    return float((d - EPOCH).days)


def season_bounds(year: int) -> tuple[float, float]:
    return days(dt.date(year, *SEASON_START)), days(dt.date(year, *SEASON_END))


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale_px: float) -> np.ndarray:
    """Unit-variance Gaussian random field with correlation length ``scale_px`` pixels.

    Generated on a coarse grid and upsampled (cubic), which is far cheaper than a
    full-resolution FFT and indistinguishable at these scales.
    """
    step = max(1.0, scale_px / 4.0)
    coarse_shape = (int(np.ceil(shape[0] / step)) + 4, int(np.ceil(shape[1] / step)) + 4)
    coarse = rng.standard_normal(coarse_shape)
    coarse = ndimage.gaussian_filter(coarse, sigma=scale_px / step / 2.0, mode="wrap")
    fine = ndimage.zoom(coarse, step, order=3, prefilter=False)[: shape[0], : shape[1]]
    if fine.shape != shape:  # zoom rounding: pad by reflection
        fine = np.pad(fine, [(0, shape[0] - fine.shape[0]), (0, shape[1] - fine.shape[1])], mode="reflect")
    std = fine.std()
    return (fine - fine.mean()) / (std if std > 0 else 1.0)


@dataclass
class Grid:
    """A north-up raster grid: top-left corner (x0, y1), pixel size res, shape (ny, nx)."""

    x0: float
    y1: float
    res: float
    ny: int
    nx: int

    def xy(self) -> tuple[np.ndarray, np.ndarray]:
        x = self.x0 + (np.arange(self.nx) + 0.5) * self.res
        y = self.y1 - (np.arange(self.ny) + 0.5) * self.res
        return x, y

    def rowcol(self, x: float, y: float) -> tuple[float, float]:
        return (self.y1 - y) / self.res - 0.5, (x - self.x0) / self.res - 0.5


# ---------------------------------------------------------------------------
# features: each knows its pixel box and its elevation change at a time t
# ---------------------------------------------------------------------------


@dataclass
class Feature(abc.ABC):
    """A local change of the surface, defined on a pixel box of the site grid."""

    fid: str
    kind: str  # "rts", "drained_lake", "active_layer_detachment", "thermokarst"
    r0: int
    c0: int
    r1: int
    c1: int

    @abc.abstractmethod
    def change(self, t: float) -> np.ndarray:
        """Elevation change (m) of the box at time t relative to the base terrain."""


@dataclass
class Slump(Feature):
    """A retrogressive thaw slump: excavation time and depth per pixel of its box."""

    t_exc: np.ndarray = field(default=None)  # days; inf = never excavated
    depth_m: np.ndarray = field(default=None)  # positive loss when excavated
    deposit_shape: np.ndarray = field(default=None)  # m of deposit per m3 deposited
    deposit_fraction: float = 0.3
    cum_t: np.ndarray = field(default=None)  # knots of the cumulative-volume curve
    cum_v: np.ndarray = field(default=None)
    temperature_driven: bool = False
    initiation_year: int | None = None  # None: scar existed before the record
    yearly_weights: dict[int, float] = field(default_factory=dict)

    def excavated_volume(self, t: float) -> float:
        return float(np.interp(t, self.cum_t, self.cum_v))

    def change(self, t: float) -> np.ndarray:
        loss = np.where(self.t_exc <= t, -self.depth_m, 0.0)
        dep = self.deposit_fraction * self.excavated_volume(t) * self.deposit_shape
        return (loss + dep).astype(np.float32)


@dataclass
class StepFeature(Feature):
    """A change that happens in one event (drained lake, active-layer detachment)."""

    t_event: float = 0.0
    delta_m: np.ndarray = field(default=None)

    def change(self, t: float) -> np.ndarray:
        return self.delta_m if t >= self.t_event else np.zeros_like(self.delta_m)


@dataclass
class Subsidence(Feature):
    """Broad thermokarst subsidence, linear in thaw-season time."""

    rate_m_per_season: np.ndarray = field(default=None)
    t_start: float = 0.0

    def change(self, t: float) -> np.ndarray:
        return (-self.rate_m_per_season * thaw_seasons_between(self.t_start, t)).astype(np.float32)


def thaw_seasons_between(t0: float, t1: float) -> float:
    """Thaw-season time elapsed between t0 and t1, in seasons (fractional)."""
    if t1 <= t0:
        return 0.0
    y0 = (EPOCH + dt.timedelta(days=t0)).year
    y1 = (EPOCH + dt.timedelta(days=t1)).year
    total = 0.0
    for y in range(y0, y1 + 1):
        s, e = season_bounds(y)
        total += max(0.0, min(e, t1) - max(s, t0)) / (e - s)
    return total


# ---------------------------------------------------------------------------
# terrain
# ---------------------------------------------------------------------------


@dataclass
class Valley:
    axis_rc: np.ndarray  # (n, 2) dense points along the axis (row, col)
    half_width_m: float
    depth_m: float


def _valley_axis(rng: np.random.Generator, g: Grid, horizontal: bool, frac: float) -> np.ndarray:
    """A sinuous polyline across the grid (dense, about 1 point per pixel)."""
    n = g.nx if horizontal else g.ny
    s = np.arange(n, dtype=float)
    amp = rng.uniform(0.05, 0.12) * n
    wl = rng.uniform(0.6, 1.2) * n
    phase = rng.uniform(0, 2 * np.pi)
    wob = amp * np.sin(2 * np.pi * s / wl + phase) + 0.3 * amp * np.sin(2 * np.pi * s / (wl / 2.7) + 1.3 * phase)
    across = frac * (g.ny if horizontal else g.nx) + wob
    return np.column_stack([across, s]) if horizontal else np.column_stack([s, across])


def make_terrain(rng: np.random.Generator, g: Grid, base_elevation_m: float, n_valleys: int = 2):
    """Plateau with fractal relief and incised valleys. Returns (z, valley_distance_m, valleys)."""
    shape = (g.ny, g.nx)
    px = g.res
    z = np.full(shape, base_elevation_m, dtype=np.float64)
    # regional tilt and fractal relief (octaves: amplitude m, correlation m)
    yy, xx = np.mgrid[0 : g.ny, 0 : g.nx].astype(np.float32)
    z += rng.uniform(-0.004, 0.004) * xx * px + rng.uniform(-0.004, 0.004) * yy * px
    # octaves (amplitude m, correlation m): regional relief, hummocky moraine, micro-relief
    for amp, scale in ((7.0, 1500.0), (4.0, 400.0), (2.5, 150.0), (0.6, 40.0), (0.15, 12.0)):
        z += amp * smooth_noise(rng, shape, scale / px)
    # valleys
    valleys: list[Valley] = []
    axis_mask = np.zeros(shape, bool)
    depth_field = np.zeros(shape)
    fracs = np.linspace(0.25, 0.75, n_valleys) + rng.uniform(-0.05, 0.05, n_valleys)
    for k in range(n_valleys):
        horizontal = bool(k % 2 == 0) if n_valleys > 1 else bool(rng.integers(2))
        axis = _valley_axis(rng, g, horizontal, fracs[k])
        v = Valley(axis, rng.uniform(190.0, 300.0), rng.uniform(30.0, 55.0))
        valleys.append(v)
        one = np.ones(shape, bool)
        rr = np.clip(np.round(axis[:, 0]).astype(int), 0, g.ny - 1)
        cc = np.clip(np.round(axis[:, 1]).astype(int), 0, g.nx - 1)
        one[rr, cc] = False
        d = ndimage.distance_transform_edt(one) * px
        q = np.clip(d / v.half_width_m, 0, 1)
        prof = v.depth_m * (1 - q**2) ** 2 + 1.5 * np.exp(-((d / 8.0) ** 2))  # valley + stream channel
        # along-valley gradient of the floor
        along = (xx if horizontal else yy) * px
        prof = prof + np.where(q < 1, 0.002 * along * (1 - q), 0.0)
        depth_field = np.maximum(depth_field, prof)
        axis_mask[rr, cc] = True
    z -= depth_field
    vdist = ndimage.distance_transform_edt(~axis_mask) * px
    return z.astype(np.float32), vdist.astype(np.float32), valleys


def slope_aspect(z: np.ndarray, res: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Slope (degrees) and the unit uphill vector (east, north components)."""
    gy, gx = np.gradient(z.astype(np.float64), res)
    # rows go south: d z / d north = -gy
    gn = -gy
    norm = np.hypot(gx, gn)
    slope = np.degrees(np.arctan(norm))
    with np.errstate(invalid="ignore", divide="ignore"):
        ue = np.where(norm > 0, gx / norm, 0.0)
        un = np.where(norm > 0, gn / norm, 0.0)
    return slope, ue, un


# ---------------------------------------------------------------------------
# slumps
# ---------------------------------------------------------------------------


def _cumulative_curve(
    years: list[int], weights: dict[int, float], v_before: float, v_total: float, t_first: float, t_last: float
) -> tuple[np.ndarray, np.ndarray]:
    """Knots (t, cumulative volume) of a volume curve: flat outside thaw seasons,
    linear within them, ``v_before`` excavated before the first season of the record."""
    wsum = sum(weights.values())
    ts = [t_first - 3650.0]
    vs = [0.0]
    # the pre-record scar is cut in the seasons before the record
    first_year = years[0]
    if v_before > 0:
        s, e = season_bounds(first_year - 1)
        ts += [s - 365.0, e]
        vs += [0.0, v_before]
    cum = v_before
    for y in years:
        s, e = season_bounds(y)
        w = weights.get(y, 0.0)
        ts += [s, e]
        vs += [cum, cum + (v_total - v_before) * w / wsum]
        cum = vs[-1]
    ts.append(max(t_last, ts[-1]) + 3650.0)
    vs.append(cum)
    return np.asarray(ts), np.asarray(vs)


def make_slump(
    rng: np.random.Generator,
    g: Grid,
    fid: str,
    mouth_rc: tuple[int, int],
    uphill: tuple[float, float],
    record_years: list[int],
    anomalies: dict[int, float],
    t_first: float,
    t_last: float,
    depth_scale_m: float,
) -> Slump:
    """A thaw slump whose mouth is at ``mouth_rc`` and which retreats along ``uphill``.

    Scar shape (polar about the mouth, after a lateral stretch ``aspect``):
    r <= L * cos(theta)^p * (1 + harmonics), a rounded amphitheatre with a narrower
    outlet; growth scales L, so scars are nested and each pixel has one excavation time.
    """
    area_final_m2 = float(np.exp(rng.normal(np.log(22000.0), 0.75)))
    area_final_m2 = float(np.clip(area_final_m2, 5000.0, 160000.0))
    p = rng.uniform(0.3, 0.6)
    aspect = rng.uniform(0.7, 1.25)
    harm = [(k, rng.uniform(0, 0.07), rng.uniform(0, 2 * np.pi)) for k in range(2, 6)]

    def rho(theta: np.ndarray) -> np.ndarray:
        base = np.cos(np.clip(theta, -np.pi / 2, np.pi / 2)) ** p
        return base * (1 + sum(a * np.cos(k * theta + ph) for k, a, ph in harm))

    # area of the unit shape (L = 1) in m2 per m2: integrate numerically
    th = np.linspace(-np.pi / 2, np.pi / 2, 721)
    unit_area = aspect * 0.5 * np.trapezoid(rho(th) ** 2, th)
    l_final = float(np.sqrt(area_final_m2 / unit_area))

    ue, un = uphill
    # pixel box: enough for the scar (upslope) and the deposit (downslope)
    ext = l_final * max(1.0, aspect) * 1.4 + 40.0
    half = int(np.ceil(ext / g.res))
    r_m, c_m = mouth_rc
    r0, r1 = max(0, r_m - half), min(g.ny, r_m + half + 1)
    c0, c1 = max(0, c_m - half), min(g.nx, c_m + half + 1)
    rr, cc = np.mgrid[r0:r1, c0:c1]
    de = (cc - c_m) * g.res  # east offset (m)
    dn = -(rr - r_m) * g.res  # north offset (m)
    s = de * ue + dn * un  # along uphill
    w = -de * un + dn * ue  # lateral
    w_s = w / aspect
    r = np.hypot(s, w_s)
    theta = np.arctan2(w_s, s)
    with np.errstate(divide="ignore", invalid="ignore"):
        l_exc = np.where((s > 0) & (np.abs(theta) < np.pi / 2), r / np.maximum(rho(theta), 1e-6), np.inf)

    # depth: deepens as the headwall cuts into higher ground, tapers to the flanks
    d_head = depth_scale_m * rng.uniform(0.6, 1.4)
    frac = np.clip(l_exc / l_final, 0, 1)
    lateral = np.abs(theta) / (np.pi / 2)
    depth = d_head * (0.45 + 0.55 * np.clip(frac / 0.5, 0, 1)) * (1 - 0.45 * lateral**3)
    depth = np.where(np.isfinite(l_exc) & (l_exc <= l_final), np.maximum(depth, 1.2), 0.0)
    depth += 0.15 * smooth_noise(rng, depth.shape, 6.0) * (depth > 0)

    # initiation: before the record (pre-existing scar) or mid-record
    if rng.random() < 0.3 and len(record_years) > 4:
        init_year = int(rng.choice(record_years[2:]))  # some in the last seasons: no rainbow yet
        l0 = 0.0
    else:
        init_year = None
        l0 = l_final * rng.uniform(0.2, 0.5)
    driven = bool(rng.random() < 0.6)
    weights: dict[int, float] = {}
    for y in record_years:
        if init_year is not None and y < init_year:
            weights[y] = 0.0
        elif driven:
            weights[y] = max(0.1, 1.0 + 0.45 * anomalies.get(y, 0.0))
        else:
            weights[y] = float(np.exp(rng.normal(0.0, 0.45)))
    if init_year is not None:
        weights[init_year] *= 1.5  # the initial collapse

    # cumulative volume by excavation order; times by inverting the volume curve
    cell_m3 = g.res * g.res * depth
    in_scar = np.isfinite(l_exc) & (l_exc <= l_final)
    order = np.argsort(np.where(in_scar, l_exc, np.inf), axis=None)
    cv = np.cumsum(cell_m3.ravel()[order])
    v_total = float(cv[-1])
    v_before = float(cell_m3[in_scar & (l_exc <= l0)].sum())
    cum_t, cum_v = _cumulative_curve(record_years, weights, v_before, v_total, t_first, t_last)
    t_sorted = np.interp(cv, cum_v, cum_t)
    t_exc = np.full(l_exc.size, np.inf)
    t_exc[order] = t_sorted
    t_exc = t_exc.reshape(l_exc.shape)
    t_exc[~in_scar] = np.inf

    # debris lobe downslope of the mouth (unit-volume shape)
    sa, sl = 0.45 * l_final, 0.3 * l_final * aspect
    lobe = np.exp(-0.5 * (((s + 0.5 * l_final) / sa) ** 2 + (w / sl) ** 2)) * (s < 0)
    lobe = lobe / max(lobe.sum() * g.res * g.res, 1e-9)

    return Slump(
        fid=fid, kind="rts", r0=r0, c0=c0, r1=r1, c1=c1,
        t_exc=t_exc, depth_m=depth.astype(np.float32), deposit_shape=lobe.astype(np.float32),
        deposit_fraction=float(rng.uniform(0.2, 0.4)), cum_t=cum_t, cum_v=cum_v,
        temperature_driven=driven, initiation_year=init_year, yearly_weights=weights,
    )


def make_drained_lake(rng, g: Grid, z: np.ndarray, fid: str, center_rc, t_event: float):
    """A lake whose water level (flat) drops to its bed in one event.

    Returns the feature and the lake's water mask (for the strips' water surfaces);
    the terrain is edited in place so that the surface before the event is the flat
    water level.
    """
    radius_m = rng.uniform(90.0, 150.0)
    half = int(radius_m * 1.6 / g.res)
    r_c, c_c = center_rc
    r0, r1, c0, c1 = max(0, r_c - half), min(g.ny, r_c + half), max(0, c_c - half), min(g.nx, c_c + half)
    rr, cc = np.mgrid[r0:r1, c0:c1]
    ang = np.arctan2(rr - r_c, cc - c_c)
    rad = radius_m * (1 + 0.15 * np.cos(2 * ang + rng.uniform(0, 6)) + 0.08 * np.cos(3 * ang + rng.uniform(0, 6)))
    d = np.hypot((rr - r_c) * g.res, (cc - c_c) * g.res)
    inside = d < rad
    level = float(np.percentile(z[r0:r1, c0:c1][inside], 20))
    z[r0:r1, c0:c1][inside] = level
    bed_depth = rng.uniform(2.0, 5.0) * (1 - (d / rad) ** 2)
    delta = np.where(inside, -np.maximum(bed_depth, 0.0), 0.0).astype(np.float32)
    # a residual pond remains in the deepest part: no change there
    delta[inside & (d < 0.2 * rad)] = 0.0
    feat = StepFeature(fid=fid, kind="drained_lake", r0=r0, c0=c0, r1=r1, c1=c1, t_event=t_event, delta_m=delta)
    return feat, inside


def make_permanent_lake(rng, g: Grid, z: np.ndarray, center_rc, radius_m=(60.0, 120.0)
                        ) -> tuple[tuple[int, int, int, int], np.ndarray]:
    """A lake or pond with a flat surface (the terrain is levelled in place)."""
    radius_m = rng.uniform(*radius_m)
    half = int(radius_m * 1.5 / g.res)
    r_c, c_c = center_rc
    r0, r1, c0, c1 = max(0, r_c - half), min(g.ny, r_c + half), max(0, c_c - half), min(g.nx, c_c + half)
    rr, cc = np.mgrid[r0:r1, c0:c1]
    ang = np.arctan2(rr - r_c, cc - c_c)
    rad = radius_m * (1 + 0.12 * np.cos(2 * ang + rng.uniform(0, 6)))
    inside = np.hypot((rr - r_c) * g.res, (cc - c_c) * g.res) < rad
    z[r0:r1, c0:c1][inside] = float(np.percentile(z[r0:r1, c0:c1][inside], 10))
    return (r0, r1, c0, c1), inside


def make_detachment(rng, g: Grid, fid: str, top_rc, uphill, t_event: float, *, kind: str = "active_layer_detachment",
                    length_m=(110.0, 180.0), width_m=(28.0, 40.0), depth_m=(1.1, 1.6)) -> StepFeature:
    """A slide cut in one event, its material deposited as a toe lobe just downslope: by
    default an active-layer detachment (a shallow elongated scar); with larger depth and
    width a one-off landslide as deep as a thaw slump, but without its retreating headwall."""
    length = rng.uniform(*length_m)
    width = rng.uniform(*width_m)
    depth = rng.uniform(*depth_m)
    ue, un = uphill
    half = int((length * 1.8) / g.res)
    r_t, c_t = top_rc
    r0, r1, c0, c1 = max(0, r_t - half), min(g.ny, r_t + half), max(0, c_t - half), min(g.nx, c_t + half)
    rr, cc = np.mgrid[r0:r1, c0:c1]
    de, dn = (cc - c_t) * g.res, -(rr - r_t) * g.res
    s = -(de * ue + dn * un)  # downslope distance from the top
    w = -de * un + dn * ue
    prof = np.clip(1 - (2 * s / length - 1) ** 2, 0, 1) ** 0.3  # along
    scar = (s > 0) & (s < length) & (np.abs(w) < width / 2 * (0.6 + 0.4 * prof))
    delta = np.where(scar, -depth * (1 - (2 * w / width) ** 4).clip(0.3, 1), 0.0)
    vol = -delta.sum() * g.res * g.res
    toe = np.exp(-0.5 * (((s - length - 30.0) / 25.0) ** 2 + (w / (width * 0.9)) ** 2))
    toe *= 0.8 * vol / max(toe.sum() * g.res * g.res, 1e-9)
    delta = (delta + toe).astype(np.float32)
    return StepFeature(fid=fid, kind=kind, r0=r0, c0=c0, r1=r1, c1=c1, t_event=t_event, delta_m=delta)


def make_subsidence(rng, g: Grid, fid: str, center_rc, t_start: float) -> Subsidence:
    """Broad, slow thermokarst subsidence (centimetres per season over hundreds of metres)."""
    radius_m = rng.uniform(250.0, 400.0)
    rate = rng.uniform(0.08, 0.13)
    half = int(radius_m * 1.8 / g.res)
    r_c, c_c = center_rc
    r0, r1, c0, c1 = max(0, r_c - half), min(g.ny, r_c + half), max(0, c_c - half), min(g.nx, c_c + half)
    rr, cc = np.mgrid[r0:r1, c0:c1]
    d2 = ((rr - r_c) ** 2 + (cc - c_c) ** 2) * g.res**2
    field_ = rate * np.exp(-0.5 * d2 / (radius_m / 1.6) ** 2)
    return Subsidence(fid=fid, kind="thermokarst", r0=r0, c0=c0, r1=r1, c1=c1,
                      rate_m_per_season=field_.astype(np.float32), t_start=t_start)


def surface_at(z0: np.ndarray, features: list[Feature], t: float) -> np.ndarray:
    """The true surface at time t: the base terrain plus every feature's change."""
    z = z0.copy()
    for f in features:
        z[f.r0 : f.r1, f.c0 : f.c1] += f.change(t)
    return z
