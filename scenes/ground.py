"""What changes on the ground in a family-B scene, as elevation change fields in time.

Times are days since 2000-01-01. Every feature covers a box ``(r0, r1, c0, c1)`` of the
scene grid and returns ``dz(t)``: its elevation change (m) inside the box relative to the
initial surface, which already carries what happened before the record.

Thaw slumps (``Slump``) retreat upslope: a front advances through the footprint, a
pixel is excavated when the front passes it, to a depth that grows towards the headwall
(ice-rich permafrost exposed there). The footprint is a real slump outline from a
published inventory (Nitze et al. 2021 labels; Huang et al. 2022) when those files are
present, oriented upslope and scaled, else a random arcuate outline. The front's
advance per thaw season follows the summer temperature anomaly for temperature-driven
slumps and is random otherwise; slumps can be polycyclic (a scar that predates the
record, reactivated), stabilising (advance decaying to nothing) or paired so that their
scars coalesce. Part of the excavated material is deposited as a debris tongue below
the mouth.

Loss that is not a slump: thermo-erosion gullies growing headwards, river-bank
retreat, thermokarst subsidence, lakes that drain in one event (flat floors, rarely in a
water mask), one-off active-layer detachments.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy import ndimage

REPO = Path(__file__).resolve().parent.parent


def day(d: dt.date) -> float:
    return float((d - dt.date(2000, 1, 1)).days)


def thaw_season(year: int, lat: float) -> tuple[float, float]:
    """Days of the ground's thaw (active slumping) season of ``year`` at ``lat``:
    early June at 65 N to early July at 80 N, to mid-September / late August."""
    start = dt.date(year, 1, 1) + dt.timedelta(days=int(150 + 2.0 * (lat - 65.0)))
    end = dt.date(year, 1, 1) + dt.timedelta(days=int(262 - 1.6 * (lat - 65.0)))
    return day(start), day(end)


# ----------------------------------------------------------------------------- footprints

@lru_cache(maxsize=1)
def _inventory_outlines() -> tuple[np.ndarray, ...]:
    """Real slump outlines as (k, 2) vertex arrays in metres, centred, principal axis along y."""
    root = REPO.parent / "shared" / "data" / "inventories"
    paths = [root / "nitze2021" / "GT_Set_Nitze_etal_2021_TrainingSet_RTS.shp",
             root / "huang2022" / "Banks_Island_slumps.shp"]
    out: list[np.ndarray] = []
    try:
        import geopandas as gpd
    except ImportError:  # pragma: no cover
        return ()
    for p in paths:
        if not p.exists():
            continue
        try:
            df = gpd.read_file(p)
        except Exception:
            continue
        df = df[df.geometry.notna()]
        df = df.set_geometry(df.geometry.make_valid())
        if df.crs is not None and df.crs.is_geographic:
            df = df.to_crs(df.estimate_utm_crs())
        for geom in df.geometry:
            if geom.geom_type == "MultiPolygon":
                geom = max(geom.geoms, key=lambda g: g.area)
            if geom.geom_type != "Polygon" or not (800.0 <= geom.area <= 120_000.0):
                continue
            xy = np.asarray(geom.exterior.coords)[:, :2]
            xy = xy - xy.mean(0)
            w, v = np.linalg.eigh(np.cov(xy.T))
            xy = xy @ v[:, ::-1]  # major axis first -> rotate major axis onto y below
            out.append(np.c_[xy[:, 1], xy[:, 0]])
    return tuple(out)


def _random_outline(rng: np.random.Generator) -> np.ndarray:
    """An arcuate scar outline (k, 2) in metres, long axis along y."""
    th = np.linspace(0, 2 * np.pi, 96, endpoint=False)
    a, b = 1.0, float(rng.uniform(0.5, 1.0))
    p = float(rng.uniform(2.0, 3.5))
    r = (np.abs(np.cos(th)) ** p + np.abs(np.sin(th)) ** p) ** (-1.0 / p)
    r *= 1.0 + 0.08 * np.sin(3 * th + rng.uniform(0, 6)) + 0.05 * np.sin(5 * th + rng.uniform(0, 6))
    return np.c_[b * r * np.cos(th), a * r * np.sin(th)]


def outline(rng: np.random.Generator, area_m2: float, elongation: float | None = None) -> np.ndarray:
    """A slump outline with the given area, long axis along +y (upslope), metres."""
    shapes = _inventory_outlines()
    if shapes:
        xy = shapes[int(rng.integers(len(shapes)))].copy()
    else:
        xy = _random_outline(rng)
    if elongation is not None:
        xy[:, 1] *= elongation
    from shapely.geometry import Polygon

    a = Polygon(xy).buffer(0).area
    return xy * np.sqrt(area_m2 / max(a, 1e-9))


def rasterize_outline(xy: np.ndarray, angle: float, res_m: float):
    """Rotate the outline so +y points along ``angle`` (radians, from east, counter-clockwise)
    and rasterize it: (mask, u, v, offset) with u the along-axis coordinate (m, upslope) and
    v across, both relative to the outline's centre, on a local pixel box."""
    from rasterio.features import rasterize
    from shapely.geometry import Polygon
    from affine import Affine

    ca, sa = np.cos(angle - np.pi / 2), np.sin(angle - np.pi / 2)
    rot = np.c_[xy[:, 0] * ca - xy[:, 1] * sa, xy[:, 0] * sa + xy[:, 1] * ca]
    half = int(np.ceil(np.abs(rot).max() / res_m)) + 3
    n = 2 * half + 1
    tr = Affine(res_m, 0, -half * res_m - res_m / 2, 0, -res_m, half * res_m + res_m / 2)
    mask = rasterize([(Polygon(rot).buffer(0), 1)], out_shape=(n, n), transform=tr, dtype="uint8").astype(bool)
    yy, xx = np.mgrid[0:n, 0:n]
    e = (xx - half) * res_m
    nn = (half - yy) * res_m
    u = e * np.cos(angle) + nn * np.sin(angle)
    v = -e * np.sin(angle) + nn * np.cos(angle)
    return mask, u, v, half


# ----------------------------------------------------------------------------- features

@dataclass
class Feature:
    fid: str
    kind: str
    r0: int
    r1: int
    c0: int
    c1: int

    def dz(self, t: float) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError


@dataclass
class Slump(Feature):
    """A retreating scar. ``t_exc`` (box) is when each pixel was excavated (inf never,
    -inf before the record); ``depth`` (box, m) its loss; ``deposit`` (box, m) the debris
    tongue's final thickness, built up in proportion to the excavated volume."""

    t_exc: np.ndarray = field(repr=False, default=None)
    depth: np.ndarray = field(repr=False, default=None)
    deposit: np.ndarray = field(repr=False, default=None)
    temperature_driven: bool = False
    style: str = "active"
    initiation_year: int = 0
    yearly_advance: dict = field(default_factory=dict)
    group: str = ""

    def excavated(self, t: float) -> np.ndarray:
        return self.t_exc <= t

    def dz(self, t: float) -> np.ndarray:
        ex = self.excavated(t)
        loss = np.where(ex, self.depth, 0.0)
        total = float(np.where(np.isfinite(self.t_exc), self.depth, 0.0).sum()) or 1.0
        frac = float(loss.sum()) / total
        return -loss + self.deposit * frac * (~ex)


def make_slump(rng: np.random.Generator, fid: str, center_rc: tuple[int, int], upslope_angle: float,
               area_m2: float, headwall_m: float, res_m: float, seasons: list[tuple[int, float, float]],
               anomalies: dict[int, float], t_first: float, *, temperature_driven: bool, style: str,
               elongation: float | None = None, group: str = "") -> Slump:
    """A slump whose final footprint (at the end of ``seasons``) has ``area_m2``.

    ``seasons``: (year, start_day, end_day) of each thaw season of the record.
    ``style``: "active" (advances every year), "stabilising" (advance decays),
    "polycyclic" (an old scar reactivated part-way through the record), "new"
    (initiates during the record).
    """
    xy = outline(rng, area_m2, elongation)
    mask, u, v, half = rasterize_outline(xy, upslope_angle, res_m)
    um = u[mask]
    u0, u1 = float(um.min()), float(um.max())
    width = max(float(np.ptp(v[mask])), 2 * res_m)
    # reach of each pixel along the retreat: along the axis, the front arcuate (concave upslope)
    reach = (u - u0) / max(u1 - u0, res_m) - 0.25 * (2.0 * v / width) ** 2
    reach = np.where(mask, np.clip(reach, 0.0, 1.0), np.inf)
    # the advance of the front per season
    years = [s[0] for s in seasons]
    n = len(years)
    if temperature_driven:
        rate = np.array([max(0.05, 1.0 + 0.9 * anomalies.get(y, 0.0)) for y in years])
    else:
        rate = rng.lognormal(0.0, 0.55, n)
    if style == "stabilising":
        rate *= np.exp(-np.arange(n) / rng.uniform(1.5, 3.0))
    start_front = 0.0
    if style == "polycyclic":
        start_front = float(rng.uniform(0.35, 0.6))  # the old scar
        k = int(rng.integers(1, max(2, n // 2)))
        rate[:k] = 0.0
    elif style == "new":
        k = int(rng.integers(1, max(2, n - 3)))
        rate[:k] = 0.0
    else:
        start_front = float(rng.uniform(0.15, 0.4))
    adv = rate / max(rate.sum(), 1e-9) * (1.0 - start_front)
    # front position through time: piecewise linear inside each season, flat between
    knots_t, knots_f = [t_first - 1.0], [start_front]
    f = start_front
    for (_y, s0, s1), a in zip(seasons, adv):
        knots_t += [s0, s1]
        knots_f += [f, f + a]
        f += a
    knots_t = np.asarray(knots_t)
    knots_f = np.maximum.accumulate(np.asarray(knots_f))
    t_exc = np.full(reach.shape, np.inf)
    inside = np.isfinite(reach)
    r = reach[inside]
    before = r <= start_front + 1e-9
    te = np.interp(r, knots_f + np.arange(len(knots_f)) * 1e-9, knots_t)
    te[before] = -np.inf
    te[r > knots_f[-1] + 1e-9] = np.inf
    t_exc[inside] = te
    # depth: shallow at the mouth, deepest behind the headwall, tapering at the flanks
    flank = np.clip(1.0 - (2.0 * np.abs(v) / width) ** 4, 0.0, 1.0) ** 0.5
    depth = np.where(inside, headwall_m * (0.3 + 0.7 * np.clip(reach, 0, 1)) * (0.35 + 0.65 * flank), 0.0)
    depth = ndimage.gaussian_filter(depth, 1.0) * inside
    # debris tongue below the mouth: 20-40 % of what was excavated in the record
    active_vol = float(depth[np.isfinite(t_exc) & (t_exc > -np.inf)].sum()) * res_m * res_m
    tongue = np.exp(-(((u - u0 + 0.35 * (u1 - u0)) / (0.35 * (u1 - u0) + res_m)) ** 2)
                    - (v / (0.3 * width + res_m)) ** 2) * (u < u0 + 0.1 * (u1 - u0)) * ~inside
    if tongue.sum() > 0:
        tongue *= rng.uniform(0.2, 0.4) * active_vol / (tongue.sum() * res_m * res_m)
    r_c, c_c = center_rc
    init = 0
    if style == "new" or start_front == 0.0:
        nz = np.flatnonzero(adv > 0)
        init = years[int(nz[0])] if nz.size else 0
    return Slump(fid, "slump", r_c - half, r_c + half + 1, c_c - half, c_c + half + 1, t_exc=t_exc, depth=depth,
                 deposit=tongue, temperature_driven=temperature_driven, style=style, initiation_year=init,
                 yearly_advance={y: float(a) for y, a in zip(years, adv)}, group=group)


@dataclass
class Progressive(Feature):
    """Loss that grows through the record but is no slump: a gully cutting headwards, a
    river bank retreating, thermokarst subsidence. ``reach`` (box) is where 0..1 each pixel
    sits along the growth, ``depth`` (box, m) its final loss."""

    reach: np.ndarray = field(repr=False, default=None)
    depth: np.ndarray = field(repr=False, default=None)
    t0: float = 0.0
    t1: float = 1.0
    gradual: bool = False  # subsidence: everywhere at once, growing linearly

    def dz(self, t: float) -> np.ndarray:
        f = float(np.clip((t - self.t0) / (self.t1 - self.t0), 0.0, 1.0))
        if self.gradual:
            return -self.depth * f
        return -np.where(self.reach <= f, self.depth, 0.0)


def make_gully(rng, fid, start_rc, down_e, down_n, res_m, t0, t1) -> Progressive:
    """A thermo-erosion gully: a channel following the downslope direction from its mouth
    up to its head, growing headwards (the mouth is cut first)."""
    length = float(rng.uniform(120.0, 320.0))
    width = float(rng.uniform(5.0, 12.0))
    depth_m = float(rng.uniform(1.2, 3.0))
    n_steps = int(length / res_m)
    r, c = float(start_rc[0]), float(start_rc[1])
    pts = []
    ny, nx = down_e.shape
    heading = None
    for _ in range(n_steps):  # walk upslope from the mouth
        ri, ci = int(np.clip(r, 0, ny - 1)), int(np.clip(c, 0, nx - 1))
        e, nn = -down_e[ri, ci], -down_n[ri, ci]
        h = np.array([e, nn]) + (heading if heading is not None else 0) * 2.0 + rng.normal(0, 0.15, 2)
        h /= np.linalg.norm(h) + 1e-9
        heading = h
        pts.append((r, c))
        c += h[0]
        r -= h[1]
    pts = np.asarray(pts)
    pad = int(width / res_m) + 3
    r0, c0 = int(pts[:, 0].min()) - pad, int(pts[:, 1].min()) - pad
    r1, c1 = int(pts[:, 0].max()) + pad + 1, int(pts[:, 1].max()) + pad + 1
    H, W = r1 - r0, c1 - c0
    seed = np.zeros((H, W), bool)
    idx = np.zeros((H, W), np.float64)
    for k, (pr, pc) in enumerate(pts):
        seed[int(pr) - r0, int(pc) - c0] = True
        idx[int(pr) - r0, int(pc) - c0] = k / max(len(pts) - 1, 1)
    dist, (ir, ic) = ndimage.distance_transform_edt(~seed, return_indices=True)
    dist *= res_m
    reach = idx[ir, ic]
    prof = np.clip(1.0 - (dist / (width / 2)) ** 2, 0.0, 1.0)
    depth = depth_m * prof * (0.5 + 0.5 * (1 - reach))
    return Progressive(fid, "gully", r0, r1, c0, c1, reach=np.where(prof > 0, reach, np.inf), depth=depth,
                       t0=t0, t1=t1)


def make_riverbank(rng, fid, start_rc, angle, res_m, t0, t1) -> Progressive:
    """A river bank retreating sideways (cut-bank erosion): loss in a band along the bank
    that widens through the record."""
    length = float(rng.uniform(250.0, 500.0))
    retreat = float(rng.uniform(12.0, 35.0))
    height = float(rng.uniform(2.0, 5.0))
    half = int((length / 2 + retreat) / res_m) + 4
    n = 2 * half + 1
    yy, xx = np.mgrid[0:n, 0:n]
    e, nn = (xx - half) * res_m, (half - yy) * res_m
    along = e * np.cos(angle) + nn * np.sin(angle)
    across = -e * np.sin(angle) + nn * np.cos(angle)
    bend = 0.08 * along**2 / length  # gently curved bank
    s = across - bend
    inside = (np.abs(along) < length / 2) & (s >= 0) & (s <= retreat * (1 - (2 * along / length) ** 2))
    reach = np.where(inside, s / retreat, np.inf)
    depth = np.where(inside, height, 0.0)
    r, c = start_rc
    return Progressive(fid, "riverbank_erosion", r - half, r + half + 1, c - half, c + half + 1, reach=reach,
                       depth=depth, t0=t0, t1=t1)


def make_thermokarst(rng, fid, center_rc, res_m, t0, t1) -> Progressive:
    radius = float(rng.uniform(90.0, 200.0))
    depth_m = float(rng.uniform(0.5, 1.4))
    half = int(1.6 * radius / res_m)
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1] * res_m
    ax = float(rng.uniform(0.6, 1.0))
    d = np.hypot(xx, yy / ax) / radius
    depth = depth_m * np.exp(-(d**2) * 2.0)
    r, c = center_rc
    return Progressive(fid, "thermokarst", r - half, r + half + 1, c - half, c + half + 1, reach=np.zeros_like(depth),
                       depth=depth, t0=t0, t1=t1, gradual=True)


@dataclass
class Event(Feature):
    """One-off change at ``t_event``: ``delta`` (box, m) after it."""

    delta: np.ndarray = field(repr=False, default=None)
    t_event: float = 0.0
    water: np.ndarray | None = field(repr=False, default=None)  # lake surface before the event

    def dz(self, t: float) -> np.ndarray:
        return self.delta if t >= self.t_event else np.zeros_like(self.delta)


def make_drained_lake(rng, fid, center_rc, z, res_m, t_event) -> Event:
    """A thermokarst lake on flat ground, its surface the water level, that drains in one
    event: a flat floor 1-3 m below, a shallow bowl."""
    a = float(rng.uniform(70.0, 200.0))
    b = a * float(rng.uniform(0.55, 1.0))
    th = float(rng.uniform(0, np.pi))
    half = int(1.15 * a / res_m) + 2
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1] * res_m
    u = xx * np.cos(th) + yy * np.sin(th)
    v = -xx * np.sin(th) + yy * np.cos(th)
    q = (u / a) ** 2 + (v / b) ** 2
    q = q * (1 + 0.06 * np.sin(4 * np.arctan2(v, u) + rng.uniform(0, 6)))
    water = q < 1.0
    r, c = center_rc
    box = z[r - half : r + half + 1, c - half : c + half + 1]
    level = float(np.percentile(box[water], 20))
    floor_drop = float(rng.uniform(1.0, 3.0))
    floor = level - floor_drop * np.clip(1.0 - q, 0, 1) ** 0.25  # flat floor, steep rim
    # the initial surface is the water level; what the drainage exposes is the floor
    delta = np.where(water, floor - level, 0.0)
    box[water] = level  # the basin holds water before the event
    return Event(fid, "drained_lake", r - half, r + half + 1, c - half, c + half + 1, delta=delta, t_event=t_event,
                 water=water)


def make_detachment(rng, fid, center_rc, upslope_angle, res_m, t_event) -> Event:
    """An active-layer detachment: the thawed active layer slides off in one summer,
    shallow loss above and a deposit below (Lewkowicz 2007)."""
    length = float(rng.uniform(80.0, 220.0))
    width = float(rng.uniform(20.0, 50.0))
    thick = float(rng.uniform(0.5, 1.3))
    half = int(length / res_m) + 3
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1] * res_m
    e, nn = xx, -yy
    u = e * np.cos(upslope_angle) + nn * np.sin(upslope_angle)
    v = -e * np.sin(upslope_angle) + nn * np.cos(upslope_angle)
    body = np.clip(1 - (v / (width / 2)) ** 2, 0, 1) * (np.abs(u) < length / 2)
    delta = np.where(u > 0, -thick * body, 0.8 * thick * body * (u > -length / 2 + 5))
    delta = ndimage.gaussian_filter(delta, 1.5)
    r, c = center_rc
    return Event(fid, "active_layer_detachment", r - half, r + half + 1, c - half, c + half + 1, delta=delta,
                 t_event=t_event)


def surface_at(z0: np.ndarray, features: list[Feature], t: float) -> np.ndarray:
    z = z0.copy()
    for f in features:
        z[f.r0 : f.r1, f.c0 : f.c1] += f.dz(t)
    return z
