"""Build a family-B scene set on disk: strips, STAC catalog, ERA5 file, truth.

``build(out, seed, sites, cells)`` writes the layout every scene family shares::

    out/strips/<site>/<strip>_dem.tif, _bitmask.tif, _matchtag.tif
    out/stac/catalog.json                    STAC catalog of the strips (pystac)
    out/climate/era5_t2m_monthly.nc          ERA5 monthly 2 m temperature, the CDS's older
                                             layout (time, latitude, longitude; t2m in K)
    out/sample.json                          what was generated (family, seed, sites, cells)
    out/truth/                               EVALUATION ONLY - never read by the pipeline

A site is a block of ``cells`` x ``cells`` 2 km cells of the public EPSG:3413 work grid
(:mod:`data_products.grid`) around a real RTS region. The truth's slump unit is the
connected active area: scars that coalesce within the record are one unit, their scars
listed in ``members``.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from data_products import grid
from . import FAMILY, GENERATOR_VERSION
from .acquire import NODATA, plan_acquisitions, render, strip_stem
from .ground import (Event, Progressive, day, make_detachment, make_drained_lake, make_gully,
                     make_riverbank, make_slump, make_thermokarst, surface_at, thaw_season)
from .terrain import make_surface

MARGIN_M = 160.0
YEARS = range(2010, 2024)


@dataclass(frozen=True)
class Site:
    key: str
    name: str
    region: str
    lat: float
    lon: float
    base_m: float
    relief_m: float
    headwall_m: tuple[float, float]
    n_strips: tuple[int, int]


SITES = {s.key: s for s in [
    Site("eureka", "Fosheim Peninsula", "Ellesmere Island", 79.95, -85.60, 150.0, 90.0, (2.0, 6.0), (6, 14)),
    Site("thomsen", "Thomsen River", "Banks Island", 73.30, -119.80, 90.0, 60.0, (3.0, 9.0), (12, 24)),
    Site("tuktoyaktuk", "Tuktoyaktuk Coastlands", "Northwestern Canada", 69.35, -133.05, 40.0, 35.0,
         (2.5, 8.0), (18, 40)),
    Site("batagay", "Yana Uplands", "Northeastern Siberia", 67.60, 134.70, 260.0, 110.0, (4.0, 14.0), (10, 22)),
    Site("kolyma", "Lower Kolyma", "Northeastern Siberia", 68.70, 159.10, 30.0, 45.0, (3.0, 10.0), (14, 30)),
]}


def block_cells(site: Site, cells: int) -> list[grid.Cell]:
    from pyproj import Transformer

    x, y = Transformer.from_crs("EPSG:4326", "EPSG:3413", always_xy=True).transform(site.lon, site.lat)
    c = grid.cell_at(x, y)
    return [grid.Cell(c.ix + i, c.iy + j) for j in range(cells) for i in range(cells)]


def _free(occupied, r, c, half):
    ny, nx = occupied.shape
    if r - half < 0 or c - half < 0 or r + half >= ny or c + half >= nx:
        return False
    return not occupied[r - half : r + half, c - half : c + half].any()


def _place(rng, cand, occupied, half, tries=3000):
    idx = np.flatnonzero(cand)
    if not idx.size:
        return None
    for k in rng.choice(idx, size=min(tries, idx.size), replace=False):
        r, c = divmod(int(k), cand.shape[1])
        if _free(occupied, r, c, half):
            return r, c
    return None


def _fits(f, shape):
    return f.r0 >= 0 and f.c0 >= 0 and f.r1 <= shape[0] and f.c1 <= shape[1]


def _anomalies(rng) -> dict[int, float]:
    """July-August temperature anomaly (deg C) per year: interannual spread and a trend."""
    return {y: float(0.07 * (y - 2016) + rng.normal(0, 1.0)) for y in range(2005, 2026)}


def build_site(out: Path, site: Site, seed: int, cells: int, index: int) -> dict:
    t_start = time.time()
    rng = np.random.default_rng([seed, index, 90210])
    block = block_cells(site, cells)
    bx0, by0 = min(c.bounds[0] for c in block), min(c.bounds[1] for c in block)
    bx1, by1 = max(c.bounds[2] for c in block), max(c.bounds[3] for c in block)
    res = grid.RESOLUTION_M
    m = int(MARGIN_M / res)
    x0, y1 = bx0 - MARGIN_M, by1 + MARGIN_M
    ny, nx = int((by1 - by0) / res) + 2 * m, int((bx1 - bx0) / res) + 2 * m
    surf = make_surface(rng, (ny, nx), res, site.base_m, site.relief_m)
    z0 = surf.z
    n_strips = int(rng.integers(site.n_strips[0], site.n_strips[1] + 1))
    dates = plan_acquisitions(rng, n_strips, site.lat, YEARS)
    t_first, t_last = day(dates[0]), day(dates[-1])
    seasons = [(y, *thaw_season(y, site.lat)) for y in range(dates[0].year, dates[-1].year + 1)]
    seasons = [(y, max(a, t_first), min(b, t_last)) for y, a, b in seasons if b > t_first and a < t_last]
    anomalies = _anomalies(rng)

    inner = np.zeros((ny, nx), bool)
    pad = m + int(150 / res)
    inner[pad:-pad, pad:-pad] = True
    occupied = np.zeros((ny, nx), bool)
    slope = surf.slope_deg
    hill = inner & (slope > 3.0) & (slope < 16.0)
    flat = inner & (slope < 1.5)
    upslope = np.arctan2(-surf.down_n, -surf.down_e)
    features, slumps, looks = [], [], []

    def add(f, pad_px=8):
        if f is None or not _fits(f, (ny, nx)):
            return False
        features.append(f)
        occupied[max(0, f.r0 - pad_px) : f.r1 + pad_px, max(0, f.c0 - pad_px) : f.c1 + pad_px] = True
        return True

    # --------------------------------------------------------------- thaw slumps
    n_slumps = int(round(1.8 * cells * cells)) + int(rng.integers(0, 3))
    styles = ["active", "active", "stabilising", "polycyclic", "new"]
    k = 0
    attempts = 0
    while k < n_slumps and attempts < 4 * n_slumps:
        attempts += 1
        area = float(np.clip(rng.lognormal(np.log(10000.0), 0.6), 3000.0, 60000.0))
        half = int(np.sqrt(area) / res * 1.2) + 6
        pick = _place(rng, hill, occupied, half)
        if pick is None:
            break
        r, c = pick
        ang = float(upslope[r, c])
        elong = float(rng.uniform(1.8, 3.2)) if rng.random() < 0.25 else None
        style = str(rng.choice(styles))
        hw = float(rng.uniform(*site.headwall_m))
        driven = bool(rng.random() < 0.6)
        group = f"{site.key}-unit-{k + 1:02d}"
        s = make_slump(rng, f"{site.key}-scar-{k + 1:02d}a", (r, c), ang, area, hw, res, seasons, anomalies, t_first,
                       temperature_driven=driven, style=style, elongation=elong, group=group)
        if not _fits(s, (ny, nx)):
            continue
        members = [s]
        if rng.random() < 0.3:  # a neighbour whose scar will coalesce with this one
            width = float(np.ptp(np.argwhere(np.isfinite(s.t_exc))[:, 1])) * res if np.isfinite(s.t_exc).any() else 50
            side = ang + np.pi / 2
            off = 0.55 * width + rng.uniform(5, 25)
            r2 = int(round(r - off * np.sin(side) / res))
            c2 = int(round(c + off * np.cos(side) / res))
            s2 = make_slump(rng, f"{site.key}-scar-{k + 1:02d}b", (r2, c2), ang + rng.normal(0, 0.15),
                            area * rng.uniform(0.5, 1.0),
                            hw * rng.uniform(0.7, 1.2), res, seasons, anomalies, t_first, temperature_driven=driven,
                            style="active", group=group)
            if _fits(s2, (ny, nx)):
                members.append(s2)
        for f in members:
            features.append(f)
            slumps.append(f)
        for f in members:
            occupied[max(0, f.r0) : f.r1, max(0, f.c0) : f.c1] = True
        k += 1

    # --------------------------------------------------------------- look-alikes
    lakes_render = []  # (rs, cs, water mask, level sigma, flag prob, until)
    mid = [d for d in dates[1:-1] if thaw_season(d.year, site.lat)[0] <= day(d) <= thaw_season(d.year, site.lat)[1]]
    for i in range(int(rng.integers(2, 5))):
        pick = _place(rng, flat, occupied, int(230 / res))
        if pick is None or not mid:
            break
        t_ev = day(mid[int(rng.integers(len(mid)))]) - float(rng.integers(2, 25))
        lake = make_drained_lake(rng, f"{site.key}-drained-lake-{i + 1}", pick, z0, res, t_ev)
        if add(lake):
            looks.append(lake)
            flag = 0.9 if i == 0 and rng.random() < 0.5 else 0.0  # most lakes never in the water mask
            lakes_render.append((slice(lake.r0, lake.r1), slice(lake.c0, lake.c1), lake.water, 0.25, flag, lake.t_event))
    for _ in range(int(rng.integers(2, 5))):  # permanent lakes and ponds
        pick = _place(rng, flat, occupied, int(90 / res))
        if pick is None:
            break
        r, c = pick
        rad = rng.uniform(20.0, 80.0) / res
        h = int(rad) + 2
        yy, xx = np.mgrid[-h : h + 1, -h : h + 1]
        wm = np.hypot(yy, xx * rng.uniform(0.6, 1.0)) < rad
        rs, cs = slice(r - h, r + h + 1), slice(c - h, c + h + 1)
        z0[rs, cs][wm] = float(np.percentile(z0[rs, cs][wm], 15))
        lakes_render.append((rs, cs, wm, 0.3, 0.3 if rng.random() < 0.5 else 0.0, np.inf))
        occupied[rs, cs] = True
    for i in range(int(rng.integers(2, 4))):
        pick = _place(rng, hill, occupied, int(170 / res))
        if pick is None:
            break
        g = make_gully(rng, f"{site.key}-gully-{i + 1}", pick, surf.down_e, surf.down_n, res, t_first, t_last)
        if add(g):
            looks.append(g)
    pick = _place(rng, inner & (slope < 6), occupied, int(280 / res))
    if pick is not None:
        b = make_riverbank(rng, f"{site.key}-riverbank-1", pick, float(rng.uniform(0, np.pi)), res, t_first, t_last)
        if add(b):
            looks.append(b)
    for i in range(int(rng.integers(1, 3))):
        pick = _place(rng, flat | (inner & (slope < 3)), occupied, int(330 / res))
        if pick is None:
            break
        tk = make_thermokarst(rng, f"{site.key}-thermokarst-{i + 1}", pick, res, t_first, t_last)
        if add(tk):
            looks.append(tk)
    hot = sorted([s for s in seasons[1:-1]], key=lambda s: -anomalies.get(s[0], 0))[:3]
    for i in range(2):
        pick = _place(rng, hill, occupied, int(230 / res))
        if pick is None or not hot:
            break
        y, a, bnd = hot[i % len(hot)]
        dtc = make_detachment(rng, f"{site.key}-detachment-{i + 1}", pick, float(upslope[pick]), res,
                              float(rng.uniform(a, bnd)))
        if add(dtc):
            looks.append(dtc)

    # late snow: lee of the valley sides, the same places every year
    wind = float(rng.uniform(0, 2 * np.pi))  # direction the wind blows towards
    lee_dir = np.cos(np.arctan2(surf.down_n, surf.down_e) - wind)
    lee = ndimage.gaussian_filter(((lee_dir > 0.4) & (slope > 4.0)).astype(float) * np.clip(slope / 12, 0, 1), 4)

    # --------------------------------------------------------------- strips
    sdir = out / "strips" / site.key
    cdir = out / "truth" / site.key / "clouds"
    sdir.mkdir(parents=True, exist_ok=True)
    cdir.mkdir(parents=True, exist_ok=True)
    import rasterio
    from rasterio.transform import from_origin

    tr = from_origin(x0, y1, res, res)
    prof = dict(driver="GTiff", width=nx, height=ny, count=1, crs="EPSG:3413", transform=tr, tiled=True,
                blockxsize=256, blockysize=256, compress="deflate")
    strip_rows = []
    summers = {}
    for d in dates:
        summers.setdefault(d.year, []).append(d)
    two_cloudy = [ds[:2] for ds in summers.values() if len(ds) >= 2]
    forced = {dates[0], dates[-1]} | (set(two_cloudy[int(rng.integers(len(two_cloudy)))]) if two_cloudy else set())
    for d in dates:
        t = day(d)
        sensor = str(rng.choice(["WV01", "WV02", "WV03", "GE01"], p=[0.3, 0.35, 0.3, 0.05]))
        name = strip_stem(rng, d, sensor)
        z_t = surface_at(z0, features, t)
        lk = [(rs, cs, wm, ls) for rs, cs, wm, ls, fp, until in lakes_render if t < until]
        fps = [fp for rs, cs, wm, ls, fp, until in lakes_render if t < until]
        doy = d.timetuple().tm_yday
        dem, mt, bm, cl, st = render(rng, z_t, res, x0, y1, doy=doy, lat=site.lat, lee=lee, lakes=lk,
                                     water_flag_prob=fps, force_cloud=d in forced, name=name, site=site.key,
                                     date=d, sensor=sensor)
        with rasterio.open(sdir / f"{name}_dem.tif", "w", dtype="float32", nodata=NODATA, predictor=3, **prof) as dst:
            dst.write(dem, 1)
        with rasterio.open(sdir / f"{name}_bitmask.tif", "w", dtype="uint8", **prof) as dst:
            dst.write(bm, 1)
        with rasterio.open(sdir / f"{name}_matchtag.tif", "w", dtype="uint8", **prof) as dst:
            dst.write(mt, 1)
        with rasterio.open(cdir / f"{name}_clouds.tif", "w", dtype="uint8", **prof) as dst:
            dst.write(cl.astype(np.uint8), 1)
        strip_rows.append(st.row())

    truth = _truth(out, site, block, (x0, y1, res, m, ny, nx), z0, features, slumps, looks, lakes_render,
                   t_first, t_last, seasons, anomalies)
    return {
        "site": site.key, "name": site.name, "region": site.region, "lat": site.lat, "lon": site.lon,
        "cells": [c.id for c in block], "bounds_3413": [bx0, by0, bx1, by1], "n_strips": len(dates),
        "first_date": dates[0].isoformat(), "last_date": dates[-1].isoformat(), "terrain": surf.source,
        "seconds": round(time.time() - t_start, 1), "_strips": strip_rows, "_anomalies": anomalies, **truth,
    }


def _truth(out, site, block, geo, z0, features, slumps, looks, lakes_render, t_first, t_last, seasons, anomalies):
    import geopandas as gpd  # noqa: F401
    import rasterio
    from rasterio.features import shapes
    from rasterio.transform import from_origin
    from shapely.geometry import shape as to_shape
    from shapely.ops import unary_union

    x0, y1, res, m, ny, nx = geo
    full_tr = from_origin(x0, y1, res, res)

    def polygon(mask, r0=0, c0=0):
        if not mask.any():
            return None
        tr = from_origin(x0 + c0 * res, y1 - r0 * res, res, res)
        return unary_union([to_shape(g) for g, v in shapes(mask.astype(np.uint8), mask=mask, transform=tr) if v == 1])

    klass = np.zeros((ny, nx), np.uint8)
    change_time = np.full((ny, nx), np.nan, np.float32)
    season = np.zeros((ny, nx), np.int16)
    for rs, cs, wm, _ls, _fp, until in lakes_render:
        if until == np.inf:
            klass[rs, cs][wm] = 6
    # slump active areas, merged into connected units
    active_all = np.zeros((ny, nx), bool)
    owner = np.full((ny, nx), -1, np.int32)
    for i, s in enumerate(slumps):
        box = (slice(s.r0, s.r1), slice(s.c0, s.c1))
        act = (s.t_exc > t_first) & (s.t_exc <= t_last) & (s.depth >= 1.0)
        active_all[box] |= act
        owner[box][act] = i
        change_time[box][act] = s.t_exc[act]
        dep = s.deposit > 0.2
        klass[box][dep & (klass[box] == 0)] = 2
    klass[active_all] = 1
    for y, a, b in seasons:
        sel = active_all & (change_time > a - 120) & (change_time <= b + 120)
        season[sel] = y
    lab, n = ndimage.label(active_all, structure=np.ones((3, 3), bool))
    # the ground's own change over the record: where scars overlap, both lowered it, and a
    # neighbour's debris may lie on a scar; a unit's true loss is this surface's, not the sum
    # of each pixel's owning scar alone
    z_first = surface_at(z0, features, t_first)
    z_last = surface_at(z0, features, t_last)
    lowering = z_first - z_last
    yearly_rows, slump_rows = [], []
    bmask = np.zeros((ny, nx), bool)
    bmask[m : ny - m, m : nx - m] = True
    for u in range(1, n + 1):
        unit = lab == u
        if unit.sum() * res * res < 400.0:
            continue
        mem = sorted({int(o) for o in np.unique(owner[unit]) if o >= 0})
        names = [slumps[i].fid for i in mem]
        owned = 0.0
        yearly = {}
        for i in mem:
            s = slumps[i]
            box = (slice(s.r0, s.r1), slice(s.c0, s.c1))
            sel = unit[box] & (owner[box] == i)
            owned += float(s.depth[sel].sum()) * res * res
            for y, a, b in seasons:
                inside = sel & (s.t_exc > a - 120) & (s.t_exc <= b + 120)
                yearly[y] = yearly.get(y, 0.0) + float(s.depth[inside].sum()) * res * res
        vol = float(lowering[unit].sum()) * res * res
        if owned > 0:  # the seasons keep their shares of the unit's true loss
            yearly = {y: v * vol / owned for y, v in yearly.items()}
        # a group's name only when the unit holds the whole group: scars planned to coalesce
        # that stayed apart are separate units, each named by its scars
        groups = {slumps[i].group for i in mem}
        whole = len(groups) == 1 and {i for i, s in enumerate(slumps) if s.group in groups} == set(mem)
        uid = slumps[mem[0]].group if whole else "+".join(names)
        for y, v in yearly.items():
            if v > 0:
                yearly_rows.append({"slump_id": uid, "year": y, "volume_m3": v})
        ys = [y for y in yearly if yearly[y] > 0]
        driven = False
        if len(ys) >= 3:
            v = np.array([yearly[y] for y in ys])
            a = np.array([anomalies.get(y, 0.0) for y in ys])
            if v.std() > 0 and a.std() > 0:
                driven = bool(np.corrcoef(v, a)[0, 1] >= 0.5)
        poly = polygon(unit)
        cells = [c.id for c in block if poly.intersects(_box(c.bounds)) and poly.intersection(_box(c.bounds)).area > 0]
        slump_rows.append({
            "slump_id": uid, "site": site.key, "region": site.region, "geometry": poly,
            "area_m2": float(unit.sum() * res * res), "volume_m3": vol,
            "mean_dh_m": -vol / float(unit.sum() * res * res), "temperature_driven": driven,
            "initiation_year": int(min(slumps[i].initiation_year or 9999 for i in mem)) % 9999,
            "style": ",".join(sorted({slumps[i].style for i in mem})), "members": " ".join(names),
            "n_members": len(mem), "crosses_cell_edge": len(cells) > 1, "cells": " ".join(cells),
            "inside_block": bool((unit & bmask).sum() > 0.5 * unit.sum()),
        })
    look_rows = []
    codes = {"drained_lake": 3, "active_layer_detachment": 4, "thermokarst": 5, "gully": 7, "riverbank_erosion": 7}
    for f in looks:
        delta = f.dz(t_last) - f.dz(t_first)
        mask = delta <= -0.5
        if not mask.any():
            continue
        box = (slice(f.r0, f.r1), slice(f.c0, f.c1))
        klass[box][mask & (klass[box] == 0)] = codes[f.kind]
        ev = ""
        if isinstance(f, Event):
            ev = (dt.date(2000, 1, 1) + dt.timedelta(days=int(f.t_event))).isoformat()
        look_rows.append({"feature_id": f.fid, "site": site.key, "kind": f.kind, "geometry": polygon(mask, f.r0, f.c0),
                          "area_m2": float(mask.sum() * res * res), "event_date": ev, "min_dh_m": float(delta.min()),
                          "progressive": isinstance(f, Progressive)})
    tdir = out / "truth" / site.key
    b = (slice(m, ny - m), slice(m, nx - m))
    prof = dict(driver="GTiff", crs="EPSG:3413", transform=from_origin(x0 + m * res, y1 - m * res, res, res),
                width=nx - 2 * m, height=ny - 2 * m, count=1, compress="deflate", tiled=True, blockxsize=256,
                blockysize=256)
    for name, arr, dtype in (("true_dh", (z_last - z_first)[b], "float32"), ("class", klass[b], "uint8"),
                             ("change_season", season[b], "int16"), ("change_time", change_time[b], "float32")):
        with rasterio.open(tdir / f"{name}.tif", "w", dtype=dtype, **prof) as dst:
            dst.write(arr.astype(dtype), 1)
    del full_tr
    return {"_slumps": slump_rows, "_lookalikes": look_rows, "_yearly": yearly_rows}


def _box(b):
    from shapely.geometry import box

    return box(*b)


TRUTH_README = """# Truth of a family-B scene set - EVALUATION ONLY

Nothing here may be read by a pipeline stage. Layout as for every scene family:
`slumps.parquet` (one row per connected active area, `members` = its scars),
`lookalikes.parquet` (drained lakes, gullies, river-bank erosion, thermokarst,
active-layer detachments), `yearly_losses.csv`, `strips.csv` (each strip's injected
offsets, tilt, jitter, noise, clouds, snow), `anomalies.csv`, and per site `true_dh.tif`,
`class.tif` (0 stable, 1 slump active area, 2 slump debris, 3 drained lake,
4 detachment, 5 thermokarst, 6 permanent water, 7 gully or river-bank erosion),
`change_season.tif`, `change_time.tif` and `clouds/<strip>_clouds.tif`.
"""


def write_era5(path: Path, sites: list[tuple[float, float, dict]], years: range, seed: int) -> Path:
    """Monthly ERA5 2 m temperature on a 1 degree grid over the sites, in the CDS's older
    netCDF layout (``time``, ``latitude`` descending, ``longitude`` 0-360; ``t2m`` in K)."""
    import xarray as xr

    rng = np.random.default_rng([seed, 7])
    lats = np.arange(84.0, 59.0, -1.0)
    lons = np.arange(0.0, 360.0, 1.0)
    times = pd.date_range(f"{years.start}-01-01", f"{years.stop - 1}-12-01", freq="MS")
    la = lats[:, None]
    clim_summer = 14.0 - 0.55 * (la - 65.0)
    clim_winter = -26.0 - 0.4 * (la - 65.0)
    data = np.empty((len(times), len(lats), len(lons)), np.float32)
    # each grid point follows the nearest site's anomalies
    site_ll = np.array([[s[0], s[1] % 360.0] for s in sites])
    glat, glon = np.meshgrid(lats, lons, indexing="ij")
    dlon = np.abs(glon[..., None] - site_ll[:, 1])
    dlon = np.minimum(dlon, 360 - dlon)
    near = np.argmin(np.hypot(glat[..., None] - site_ll[:, 0], dlon * 0.3), axis=-1)
    for k, t in enumerate(times):
        phase = np.cos(2 * np.pi * (t.month - 7.3) / 12.0)
        base = clim_winter + (clim_summer - clim_winter) * (phase + 1) / 2
        an = np.zeros(near.shape)
        if t.month in (7, 8):
            for i, (_, _, anom) in enumerate(sites):
                an[near == i] = anom.get(t.year, 0.0)
        data[k] = base + an + rng.normal(0, 0.3 if t.month in (7, 8) else 1.5) + 273.15
    ds = xr.Dataset({"t2m": (("time", "latitude", "longitude"), data,
                             {"units": "K", "long_name": "2 metre temperature"})},
                    coords={"time": times, "latitude": ("latitude", lats, {"units": "degrees_north"}),
                            "longitude": ("longitude", lons, {"units": "degrees_east"})},
                    attrs={"Conventions": "CF-1.6", "history": "family-B scene set"})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".nc.part")
    ds.to_netcdf(tmp)
    tmp.replace(path)
    return path


def write_stac(out: Path, strips_dir: Path, seed: int) -> Path:
    """A self-contained static STAC catalog, one item per strip, assets dem / mask / matchtag."""
    import pystac
    import rasterio
    from pyproj import Transformer

    to_ll = Transformer.from_crs("EPSG:3413", "EPSG:4326", always_xy=True)
    cat = pystac.Catalog("rts-scenes-b", f"Family-B ArcticDEM-like strips (seed {seed})")
    for dem in sorted(strips_dir.glob("*/*_dem.tif")):
        stem = dem.name[: -len("_dem.tif")]
        with rasterio.open(dem) as src:
            b = src.bounds
        xs = [b.left, b.right, b.right, b.left, b.left]
        ys = [b.bottom, b.bottom, b.top, b.top, b.bottom]
        lon, lat = to_ll.transform(xs, ys)
        geom = {"type": "Polygon", "coordinates": [[[float(a), float(c)] for a, c in zip(lon, lat)]]}
        ymd = stem.split("_")[3] if stem.startswith("SETSM_s2s041") else stem.split("_")[2]
        when = dt.datetime.strptime(ymd, "%Y%m%d").replace(tzinfo=dt.timezone.utc)
        item = pystac.Item(stem, geom, [min(lon), min(lat), max(lon), max(lat)], when,
                           {"proj:code": "EPSG:3413", "proj:bbox": [b.left, b.bottom, b.right, b.top], "gsd": 2.0})
        for key, suffix, title in (("dem", "_dem.tif", "DEM"), ("mask", "_bitmask.tif", "bitmask"),
                                   ("matchtag", "_matchtag.tif", "matchtag")):
            item.add_asset(key, pystac.Asset(str((dem.parent / f"{stem}{suffix}").resolve()),
                                             title=title, media_type=pystac.MediaType.COG))
        cat.add_item(item)
    stac_dir = out / "stac"
    cat.normalize_hrefs(str(stac_dir.resolve()))
    cat.make_all_asset_hrefs_relative()
    cat.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    return stac_dir / "catalog.json"


def build(out: str | Path, seed: int = 0, sites: list[str] | None = None, cells: int = 2, workers: int = 2,
          log=print) -> dict:
    """Build a family-B scene set into ``out`` (replacing what is there); the manifest."""
    import geopandas as gpd

    out = Path(out)
    keys = list(sites or SITES)
    bad = [k for k in keys if k not in SITES]
    if bad:
        raise ValueError(f"unknown family-B site(s) {', '.join(bad)}; choose from {', '.join(SITES)}")
    if not 1 <= cells <= 10:
        raise ValueError("cells must be 1-10 (cells per block side)")
    for sub in ("strips", "stac", "climate", "truth"):
        shutil.rmtree(out / sub, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    index = {k: i for i, k in enumerate(SITES)}
    results = []
    if workers > 1 and len(keys) > 1:
        with ProcessPoolExecutor(max_workers=min(workers, len(keys))) as pool:
            futs = [pool.submit(build_site, out, SITES[k], seed, cells, index[k]) for k in keys]
            for k, f in zip(keys, futs):
                results.append(f.result())
                log(f"  site {k}: {results[-1]['n_strips']} strips, {len(results[-1]['_slumps'])} slump units "
                    f"({results[-1]['seconds']} s)")
    else:
        for k in keys:
            results.append(build_site(out, SITES[k], seed, cells, index[k]))
            log(f"  site {k}: {results[-1]['n_strips']} strips, {len(results[-1]['_slumps'])} slump units "
                f"({results[-1]['seconds']} s)")
    truth = out / "truth"
    (truth / "README.md").write_text(TRUTH_README)
    slumps = gpd.GeoDataFrame([r for x in results for r in x["_slumps"]], geometry="geometry", crs="EPSG:3413")
    slumps.to_parquet(truth / "slumps.parquet")
    looks = gpd.GeoDataFrame([r for x in results for r in x["_lookalikes"]], geometry="geometry", crs="EPSG:3413")
    looks.to_parquet(truth / "lookalikes.parquet")
    pd.DataFrame([r for x in results for r in x["_yearly"]]).to_csv(truth / "yearly_losses.csv", index=False)
    pd.DataFrame([r for x in results for r in x["_strips"]]).to_csv(truth / "strips.csv", index=False)
    pd.DataFrame([{"site": x["site"], "year": y, "ja_anomaly_c": a} for x in results for y, a in x["_anomalies"].items()]
                 ).to_csv(truth / "anomalies.csv", index=False)
    era5 = write_era5(out / "climate" / "era5_t2m_monthly.nc", [(x["lat"], x["lon"], x["_anomalies"]) for x in results],
                      range(2008, 2025), seed)
    stac = write_stac(out, out / "strips", seed)
    manifest = {
        "family": FAMILY, "generator_version": GENERATOR_VERSION, "seed": seed, "cells_per_side": cells,
        "sites": [{k: v for k, v in x.items() if not k.startswith("_")} for x in results],
        "n_strips": int(sum(x["n_strips"] for x in results)), "n_slumps": int(len(slumps)),
        "n_lookalikes": int(len(looks)), "climate": {"era5": str(era5.relative_to(out))},
        "stac": str(stac.relative_to(out)), "seconds": round(time.time() - t0, 1),
    }
    (out / "sample.json").write_text(json.dumps(manifest, indent=2))
    return manifest
