"""What one ArcticDEM strip makes of the ground: family B's acquisition model.

SETSM strips (Noh & Howat 2015; Porter et al. 2022) carry, and each acquisition here gets:

* absolute geolocation error: a shift of metres in x, y, z and a tilt; WorldView
  attitude *jitter*, a sinusoidal undulation across the strip (decimetres, 0.6-3 km);
* noise growing with slope, correlated over tens of metres, and white noise;
* voids (nodata) and interpolated patches (matchtag 0) where matching failed;
* clouds: high blobs (tens of metres above ground, rough), low haze and fog banks
  (metres above) and matching pits (metres to tens of metres *below*), often matched
  (matchtag 1) and only sometimes flagged in the bitmask; in any acquisition;
* late-lying snow: drifts in the lee of valley sides, the same places every year, 0.5-3 m
  thick in acquisitions soon after melt-out, gone by late July; spring snow everywhere
  thin before melt-out;
* lakes and ponds: water surfaces with noisy, unmatched heights; the bitmask's water bit
  on only a few of them;
* partial strips: a strip edge crossing the scene, nodata beyond it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from .terrain import spectral_surface

NODATA = -9999.0
_CATID = {"WV01": "102001", "WV02": "103001", "WV03": "104001", "GE01": "105001"}


@dataclass
class StripTruth:
    """One strip and what was done to it (written to truth/strips.csv)."""

    name: str
    site: str
    date: str
    sensor: str
    dx_m: float
    dy_m: float
    dz_m: float
    tilt_e: float
    tilt_n: float
    center_x: float
    center_y: float
    jitter_m: float
    noise_m: float
    n_clouds: int
    n_clouds_flagged: int
    snow_m: float
    partial: bool

    def row(self) -> dict:
        return asdict(self)


def strip_stem(rng: np.random.Generator, date: dt.date, sensor: str) -> str:
    """A v4.1 strip name (a few in the v3 convention)."""
    def catid() -> str:
        return _CATID[sensor] + "".join(rng.choice(list("0123456789ABCDEF"), 8)) + "00"

    ymd = date.strftime("%Y%m%d")
    if rng.random() < 0.12:
        return f"SETSM_{sensor}_{ymd}_{catid()}_{catid()}_seg{int(rng.integers(1, 3))}_2m_v3.0"
    return f"SETSM_s2s041_{sensor}_{ymd}_{catid()}_{catid()}_2m_lsf_seg{int(rng.integers(1, 5))}"


def plan_acquisitions(rng: np.random.Generator, n: int, lat: float, years: range) -> list[dt.date]:
    """``n`` acquisition dates over ``years``: most in the snow-free summer, some early
    (late snow) and a few same-day or same-week pairs (overlapping strips)."""
    melt = int(150 + 2.0 * (lat - 65.0))
    freeze = int(262 - 1.6 * (lat - 65.0))
    out: set[dt.date] = set()
    ys = list(years)
    while len(out) < n:
        y = int(rng.choice(ys))
        u = rng.random()
        if u < 0.22:  # early: melt-out to four weeks after (late-lying snow)
            doy = int(rng.integers(melt - 12, melt + 28))
        else:
            doy = int(rng.integers(melt + 10, freeze + 8))
        d = dt.date(y, 1, 1) + dt.timedelta(days=doy - 1)
        out.add(d)
        if rng.random() < 0.12 and len(out) < n:
            out.add(d + dt.timedelta(days=int(rng.integers(0, 6)) or 1))
    return sorted(out)[:n]


def _blob(rng, shape, r, c, radius_px):
    ny, nx = shape
    h = int(radius_px * 1.8) + 3
    rs, cs = slice(max(0, r - h), min(ny, r + h)), slice(max(0, c - h), min(nx, c + h))
    yy, xx = np.mgrid[rs, cs]
    d = np.hypot(yy - r, xx - c) / radius_px
    ang = np.arctan2(yy - r, xx - c)
    wob = 1 + 0.25 * np.sin(3 * ang + rng.uniform(0, 6)) + 0.15 * np.sin(5 * ang + rng.uniform(0, 6))
    return rs, cs, d < wob


def render(rng: np.random.Generator, z_true: np.ndarray, res_m: float, x0: float, y1: float, *,
           doy: int, lat: float, lee: np.ndarray, lakes: list[tuple[slice, slice, np.ndarray, float]],
           water_flag_prob: list[float], force_cloud: bool, name: str, site: str, date: dt.date, sensor: str):
    """Render one strip over the scene grid: (dem, matchtag, bitmask, cloud_mask, truth)."""
    ny, nx = z_true.shape
    dx = float(np.clip(rng.normal(0, 2.8), -9, 9))
    dy = float(np.clip(rng.normal(0, 2.8), -9, 9))
    dz = float(np.clip(rng.normal(0, 3.0), -9, 9))
    te, tn = rng.normal(0, 6e-6, 2)
    # a feature at (x, y) appears at (x + dx, y + dy): sample the truth at (x - dx, y - dy)
    yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float32)
    src_r = yy + dy / res_m
    src_c = xx - dx / res_m
    z = ndimage.map_coordinates(z_true, [src_r, src_c], order=1, mode="nearest")
    del src_r, src_c
    cx, cy = x0 + nx * res_m / 2, y1 - ny * res_m / 2
    E = (xx - nx / 2) * res_m
    N = (ny / 2 - yy) * res_m
    z += dz + te * E + tn * N
    # jitter: undulation along the track, constant across it
    track = float(rng.uniform(0, np.pi))
    along = E * np.cos(track) + N * np.sin(track)
    jit = float(rng.uniform(0.05, 0.35))
    z += jit * np.sin(2 * np.pi * along / rng.uniform(600.0, 3000.0) + rng.uniform(0, 6))
    del E, N, along, yy, xx
    # noise: slope-dependent correlated + white
    gy, gx = np.gradient(z_true, res_m)
    slope = np.hypot(gx, gy)
    sig = float(rng.uniform(0.08, 0.22))
    z += sig * spectral_surface(rng, (ny, nx), res_m, 2.0, 400.0, 8.0) * (1 + 3 * slope)
    z += rng.normal(0, float(rng.uniform(0.05, 0.15)), (ny, nx)) * (1 + 2 * slope)
    matchtag = np.ones((ny, nx), np.uint8)
    bitmask = np.zeros((ny, nx), np.uint8)
    clouds = np.zeros((ny, nx), bool)
    # snow: lee drifts soon after melt-out, thin cover before it
    melt = int(150 + 2.0 * (lat - 65.0))
    snow_m = 0.0
    if doy < melt + 35:
        fade = float(np.clip(1.0 - (doy - melt) / 35.0, 0.0, 1.0))
        drift = float(rng.uniform(0.5, 3.0)) * fade
        z += drift * lee
        snow_m = drift
        if doy < melt:
            z += float(rng.uniform(0.1, 0.4)) * (1 - lee)
    # lakes and ponds: noisy, mostly unmatched water surfaces
    for (rs, cs, wmask, level_sigma), fp in zip(lakes, water_flag_prob):
        sub = z[rs, cs]
        sub[wmask] += rng.normal(0, level_sigma) + rng.normal(0, 0.4, wmask.sum())
        matchtag[rs, cs][wmask & (rng.random(wmask.shape) < 0.85)] = 0
        if rng.random() < fp:
            bitmask[rs, cs][wmask] |= 2
    # voids and interpolated patches
    for _ in range(int(rng.integers(0, 5))):
        rs, cs, m = _blob(rng, (ny, nx), int(rng.integers(0, ny)), int(rng.integers(0, nx)), rng.uniform(8, 50) / res_m)
        if rng.random() < 0.4:
            z[rs, cs][m] = np.nan
        else:
            z[rs, cs][m] += ndimage.gaussian_filter(rng.normal(0, 1.5, m.shape), 6)[m] * 3
            matchtag[rs, cs][m] = 0
    # clouds: high, low, pits; any acquisition
    n_cl = int(rng.choice([0, 0, 1, 1, 2, 3]))
    if force_cloud:
        n_cl = max(n_cl, 1)
    n_flag = 0
    for _ in range(n_cl):
        kind = rng.choice(["high", "low", "pit"], p=[0.45, 0.3, 0.25])
        radius = rng.uniform(40.0, 260.0) / res_m
        rs, cs, m = _blob(rng, (ny, nx), int(rng.integers(0, ny)), int(rng.integers(0, nx)), radius)
        if kind == "high":
            off = rng.uniform(10.0, 60.0)
            rough = 4.0
        elif kind == "low":
            off = rng.uniform(2.0, 9.0)
            rough = 1.0
        else:
            off = -rng.uniform(3.0, 20.0)
            rough = 2.0
        tex = ndimage.gaussian_filter(rng.normal(0, 1, m.shape), 3) * rough * 3
        core = ndimage.gaussian_filter(m.astype(float), 4)
        z[rs, cs] = np.where(m, z[rs, cs] + off * core + tex, z[rs, cs])
        clouds[rs, cs] |= m
        if rng.random() < 0.5:
            matchtag[rs, cs][m & (rng.random(m.shape) < 0.6)] = 0
        if rng.random() < 0.35:
            bitmask[rs, cs][m] |= 4
            n_flag += 1
    # partial strip: an edge crossing the scene
    partial = bool(rng.random() < 0.3)
    if partial:
        yy, xx = np.mgrid[0:ny, 0:nx]
        a = rng.uniform(0, 2 * np.pi)
        d = (xx - nx / 2) * np.cos(a) + (yy - ny / 2) * np.sin(a) - rng.uniform(0.1, 0.45) * nx
        z[d > 0] = np.nan
        bitmask[(d > -6) & (d <= 0)] |= 1
    dem = np.where(np.isfinite(z), z, NODATA).astype(np.float32)
    matchtag[dem == NODATA] = 0
    truth = StripTruth(name, site, date.isoformat(), sensor, dx, dy, dz, float(te), float(tn), cx, cy, jit, sig,
                       n_cl, n_flag, snow_m, partial)
    return dem, matchtag, bitmask, clouds, truth
