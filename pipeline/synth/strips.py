"""Synthetic ArcticDEM strips: the true surface seen through a strip's errors.

Each acquisition renders the true surface at its date and adds the errors real
SETSM strips carry (Noh & Howat 2015; Porter et al. 2022, ArcticDEM v4.1):

* a translation of metres in x, y and z and a small tilt (absolute geolocation);
* spatially correlated noise (decimetres over hundreds of metres) and white noise;
* cloud blunders tens of metres above the ground, only some flagged in the bitmask;
* interpolated patches (matchtag 0) where matching failed, off by up to metres, and noisy
  water surfaces whose level swings between acquisitions;
* spring snow drifts on lee slopes (never flagged);
* for some strips a straight strip edge through the block (nodata beyond it, the
  bitmask's edge bit along it).

Files follow the v4.1 naming (a few use the v3 and cross-track names), float32
elevation with nodata -9999, and sibling ``_bitmask.tif`` (bit 0 edge, bit 1 water,
bit 2 cloud) and ``_matchtag.tif`` (1 matched, 0 interpolated).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin
from scipy import ndimage

from .landscape import Grid, smooth_noise

NODATA = -9999.0
SENSOR_CATID_PREFIX = {"WV01": "102001", "WV02": "103001", "WV03": "104001", "GE01": "105001"}


@dataclass
class WaterBody:
    """A water surface on the site grid (box + local mask), as SETSM sees it: a level that
    may fluctuate between acquisitions, matching noise, mostly unmatched; flagged in the
    bitmask's water bit with probability ``flag_prob`` (masks miss small or new ponds)."""

    r0: int
    r1: int
    c0: int
    c1: int
    mask: np.ndarray
    flag_prob: float
    level_sigma_m: float = 0.0
    until: float = float("inf")  # water present before this time (a lake that drains)


@dataclass
class Acquisition:
    """One strip: its name and the errors injected into it (truth)."""

    name: str
    site: str
    date: str  # ISO date
    sensor: str
    dx_m: float  # content displaced by (+dx, +dy): a feature at (x, y) appears at (x+dx, y+dy)
    dy_m: float
    dz_m: float  # added to every elevation (at the block centre; see tilt)
    tilt_e: float  # m/m, elevation error grows eastwards from the block centre
    tilt_n: float  # m/m, northwards
    center_x: float
    center_y: float
    noise_sigma_m: float
    snow: bool
    partial: bool
    n_clouds: int
    n_clouds_flagged: int
    xmin: float = 0.0
    ymin: float = 0.0
    xmax: float = 0.0
    ymax: float = 0.0

    def as_row(self) -> dict:
        return asdict(self)


def plan_dates(rng: np.random.Generator, first_year: int = 2011, last_year: int = 2022,
               n: int | None = None) -> list[dt.date]:
    """10-20 acquisition dates, mostly June-September, some in spring (snow); with ``n``,
    exactly ``n`` dates drawn the same way (a deep stack, as where strips overlap most)."""
    if n is not None:
        return _plan_n_dates(rng, first_year, last_year, n)
    while True:
        dates: list[dt.date] = []
        for y in range(first_year, last_year + 1):
            if rng.random() < 0.85:
                dates.append(dt.date(y, 6, 25) + dt.timedelta(days=int(rng.integers(0, 80))))
            if rng.random() < 0.3:
                dates.append(dt.date(y, 7, 1) + dt.timedelta(days=int(rng.integers(0, 75))))
            if rng.random() < 0.25:
                dates.append(dt.date(y, 4, 10) + dt.timedelta(days=int(rng.integers(0, 50))))
        dates = sorted(set(dates))
        ok = (
            10 <= len(dates) <= 20
            and dates[0].year <= first_year + 1
            and dates[-1].year >= last_year - 1
            and 6 <= dates[0].month <= 9
            and 6 <= dates[-1].month <= 9
        )
        if ok:
            return dates


def _plan_n_dates(rng: np.random.Generator, first_year: int, last_year: int, n: int) -> list[dt.date]:
    if not 4 <= n <= 400:
        raise ValueError(f"a stack of {n} strips: give 4 to 400")
    first = dt.date(first_year, 6, 25) + dt.timedelta(days=int(rng.integers(0, 80)))
    last = dt.date(last_year, 6, 25) + dt.timedelta(days=int(rng.integers(0, 80)))
    dates = {first, last}
    while len(dates) < n:
        y = int(rng.integers(first_year, last_year + 1))
        if rng.random() < 0.15:  # spring, with snow
            d = dt.date(y, 4, 10) + dt.timedelta(days=int(rng.integers(0, 50)))
        else:
            d = dt.date(y, 6, 25) + dt.timedelta(days=int(rng.integers(0, 80)))
        if first < d < last:
            dates.add(d)
    return sorted(dates)


def strip_name(rng: np.random.Generator, date: dt.date, style: str) -> tuple[str, str]:
    """A realistic strip file stem (without ``_dem``) and its sensor code."""
    sensor = str(rng.choice(list(SENSOR_CATID_PREFIX)))

    def catid(s: str) -> str:
        return SENSOR_CATID_PREFIX[s] + "".join(rng.choice(list("0123456789ABCDEF"), 8)) + "00"

    ymd = date.strftime("%Y%m%d")
    if style == "v3":
        return f"SETSM_{sensor}_{ymd}_{catid(sensor)}_{catid(sensor)}_seg1_2m_v3.0", sensor
    if style == "cross-track":
        pair = {"WV01": "W1W2", "WV02": "W2W3", "WV03": "W3W3", "GE01": "G1W1"}[sensor]
        other = {"W1W2": "WV02", "W2W3": "WV03", "W3W3": "WV03", "G1W1": "WV01"}[pair]
        return f"{pair}_{ymd}_{catid(sensor)}_{catid(other)}_2m_v3.0", pair
    seg = int(rng.integers(1, 4))
    return f"SETSM_s2s041_{sensor}_{ymd}_{catid(sensor)}_{catid(sensor)}_2m_lsf_seg{seg}", sensor


def _blob(rng: np.random.Generator, shape: tuple[int, int], radius_px: float) -> tuple[slice, slice, np.ndarray] | None:
    """A random irregular blob: (row slice, col slice, mask in that box)."""
    ny, nx = shape
    r = int(rng.integers(0, ny))
    c = int(rng.integers(0, nx))
    h = int(radius_px * 1.6) + 2
    rs, cs = slice(max(0, r - h), min(ny, r + h)), slice(max(0, c - h), min(nx, c + h))
    box = (rs.stop - rs.start, cs.stop - cs.start)
    if min(box) < 4:
        return None
    rr, cc = np.mgrid[rs, cs]
    d = np.hypot(rr - r, cc - c) / radius_px
    mask = d + 0.35 * smooth_noise(rng, box, max(2.0, radius_px / 2.0)) < 1.0
    return rs, cs, mask


def render_strip(
    rng: np.random.Generator,
    acq: Acquisition,
    g: Grid,
    z_true: np.ndarray,
    window: tuple[int, int, int, int],
    water: list[WaterBody],
    t: float,
    snow_zone: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The strip's (dem, bitmask, matchtag, truth cloud mask) over ``window`` = (r0, r1, c0, c1) of grid ``g``.

    ``z_true`` is the true surface at the acquisition date ``t`` on ``g``.
    """
    z = z_true.astype(np.float32, copy=True)
    matched = np.ones(z.shape, bool)
    bitmask = np.zeros(z.shape, np.uint8)
    # water surfaces: a level (fluctuating between acquisitions) with matching noise
    for wb in water:
        if t >= wb.until:
            continue
        box = (slice(wb.r0, wb.r1), slice(wb.c0, wb.c1))
        n = int(wb.mask.sum())
        level = rng.normal(0.0, wb.level_sigma_m) if wb.level_sigma_m > 0 else 0.0
        z[box][wb.mask] += (level + rng.normal(0.0, 0.35, n)).astype(np.float32)
        matched[box][wb.mask] = rng.random(n) > 0.7
        if rng.random() < wb.flag_prob:
            bitmask[box][wb.mask] |= 2
    if acq.snow and snow_zone is not None:
        drift = np.clip(1.2 * smooth_noise(rng, z.shape, 20.0) + 0.4, 0.0, 3.0) * snow_zone
        z += drift.astype(np.float32)
    # geolocation error: content displaced by (+dx, +dy) (rows run south)
    z = ndimage.shift(z, (-acq.dy_m / g.res, acq.dx_m / g.res), order=1, mode="nearest")
    matched = ndimage.shift(matched.astype(np.uint8), (-acq.dy_m / g.res, acq.dx_m / g.res), order=0, mode="nearest") > 0
    bitmask = ndimage.shift(bitmask, (-acq.dy_m / g.res, acq.dx_m / g.res), order=0, mode="nearest")

    r0, r1, c0, c1 = window
    z, matched, bitmask = z[r0:r1, c0:c1].copy(), matched[r0:r1, c0:c1].copy(), bitmask[r0:r1, c0:c1].copy()
    shape = z.shape
    x, y = g.xy()
    xx = x[c0:c1][None, :] - acq.center_x
    yy = y[r0:r1][:, None] - acq.center_y
    z += np.float32(acq.dz_m) + (acq.tilt_e * xx + acq.tilt_n * yy).astype(np.float32)
    z += (acq.noise_sigma_m * smooth_noise(rng, shape, rng.uniform(60.0, 150.0))).astype(np.float32)
    z += rng.normal(0.0, rng.uniform(0.06, 0.12), shape).astype(np.float32)

    # interpolated patches (matchtag 0): a smooth surface across the gap, off by up to
    # metres where matching failed over low-contrast ground (shadows, snow, wet tundra)
    smooth = None
    for _ in range(int(rng.integers(6, 16))):
        b = _blob(rng, shape, rng.uniform(10.0, 50.0))
        if b is None:
            continue
        if smooth is None:
            smooth = ndimage.gaussian_filter(z, 12.0)
        rs, cs, m = b
        z[rs, cs][m] = smooth[rs, cs][m] + np.float32(rng.normal(0, 2.5))
        matched[rs, cs][m] = False

    # clouds: blunders tens of metres above the ground, some flagged
    clouds = np.zeros(shape, bool)
    for k in range(acq.n_clouds):
        b = _blob(rng, shape, rng.uniform(30.0, 120.0))
        if b is None:
            continue
        rs, cs, m = b
        box = m.shape
        z[rs, cs][m] += (rng.uniform(16.0, 60.0) + 3.0 * smooth_noise(rng, box, 6.0)[m]).astype(np.float32)
        matched[rs, cs][m] &= rng.random(int(m.sum())) > 0.5
        clouds[rs, cs] |= m
        if k < acq.n_clouds_flagged:
            grown = ndimage.binary_dilation(m, iterations=3)
            bitmask[rs, cs][grown] |= 4

    # a straight strip edge through the block
    valid = np.ones(shape, bool)
    if acq.partial:
        ang = rng.uniform(0, 2 * np.pi)
        rr, cc = np.mgrid[0 : shape[0], 0 : shape[1]]
        proj = (cc - shape[1] / 2) * np.cos(ang) + (rr - shape[0] / 2) * np.sin(ang)
        cut = rng.uniform(-0.25, 0.3) * min(shape)
        valid = proj < cut
        edge = valid & (proj > cut - 25)
        bitmask[edge] |= 1
        z[edge] += rng.normal(0, 0.8, int(edge.sum())).astype(np.float32)
    z[~valid] = NODATA
    bitmask[~valid] = 1
    matched[~valid] = False
    return z, bitmask, matched.astype(np.uint8), clouds


def write_strip(folder: Path, name: str, g: Grid, window, dem, bitmask, matchtag, clouds=None,
                truth_folder: Path | None = None) -> Path:
    """Write the DEM and its siblings as tiled, deflate-compressed GeoTIFFs (EPSG:3413), and
    the strip's true cloud mask (evaluation only) into ``truth_folder``."""
    r0, _, c0, _ = window
    transform = from_origin(g.x0 + c0 * g.res, g.y1 - r0 * g.res, g.res, g.res)
    folder.mkdir(parents=True, exist_ok=True)
    common = dict(driver="GTiff", width=dem.shape[1], height=dem.shape[0], count=1, crs="EPSG:3413",
                  transform=transform, tiled=True, blockxsize=256, blockysize=256, compress="deflate")
    dem_path = folder / f"{name}_dem.tif"
    with rasterio.open(dem_path, "w", dtype="float32", nodata=NODATA, predictor=3, **common) as dst:
        dst.write(dem, 1)
    with rasterio.open(folder / f"{name}_bitmask.tif", "w", dtype="uint8", **common) as dst:
        dst.write(bitmask, 1)
    with rasterio.open(folder / f"{name}_matchtag.tif", "w", dtype="uint8", **common) as dst:
        dst.write(matchtag, 1)
    if clouds is not None and truth_folder is not None:
        truth_folder.mkdir(parents=True, exist_ok=True)
        with rasterio.open(truth_folder / f"{name}_clouds.tif", "w", dtype="uint8", **common) as dst:
            dst.write(clouds.astype(np.uint8), 1)
    return dem_path
