"""The synthetic sample region: ArcticDEM-like strips over four real RTS hotspots.

``generate_sample(out, seed, sites, cells)`` writes::

    out/strips/<site>/<strip>_dem.tif, _bitmask.tif, _matchtag.tif
    out/stac/catalog.json                 static STAC catalog of the strips
    out/climate/era5_t2m_monthly.nc       ERA5 layout (valid_time, latitude, longitude, t2m in K)
    out/climate/cru_ts_tmp.nc             CRU TS layout (time, lat, lon, tmp in deg C)
    out/sample.json                       what was generated (seed, sites, cells, counts)
    out/truth/                            EVALUATION ONLY - never read by the pipeline

Each site is a block of ``cells`` x ``cells`` 2 km cells of the work grid. The block is
deterministic given (seed, site).
"""

from __future__ import annotations

import json
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
from pyproj import Transformer
from rasterio.transform import from_origin
from scipy import ndimage

from data_products import grid, timebase
from . import climate as synth_climate
from pipeline.detection.vectorize import cells_of, mask_to_geometry
from .landscape import (
    Grid, Slump, StepFeature, Subsidence, days, make_detachment, make_drained_lake, make_permanent_lake,
    make_slump, make_subsidence, make_terrain, season_bounds, slope_aspect, surface_at,
)
from .strips import Acquisition, WaterBody, plan_dates, render_strip, strip_name, write_strip
from pipeline.strips.sources import discover_strips
from pipeline.strips.stac import write_stac_catalog

GENERATOR_VERSION = "1"
MARGIN_M = 320.0


@dataclass(frozen=True)
class SiteSpec:
    key: str
    name: str
    region: str
    lat: float
    lon: float
    base_elevation_m: float
    depth_scale_m: float  # typical headwall height


SITES: dict[str, SiteSpec] = {
    s.key: s
    for s in [
        SiteSpec("peel", "Peel Plateau", "Northwestern Canada", 67.25, -135.20, 420.0, 8.0),
        SiteSpec("banks", "Banks Island", "Canadian Arctic Archipelago", 72.95, -123.40, 120.0, 5.0),
        SiteSpec("taymyr", "Northern Taymyr", "Taymyr Peninsula", 75.55, 100.90, 70.0, 4.5),
        SiteSpec("yamal", "Central Yamal", "Yamal Peninsula", 70.30, 68.40, 45.0, 4.0),
    ]
}

TO_3413 = Transformer.from_crs("EPSG:4326", "EPSG:3413", always_xy=True)


def site_block(spec: SiteSpec, cells: int) -> list[grid.Cell]:
    x, y = TO_3413.transform(spec.lon, spec.lat)
    c = grid.cell_at(x, y)
    return [grid.Cell(c.ix + i, c.iy + j) for j in range(cells) for i in range(cells)]


def _pick(rng, candidates: np.ndarray, occupied: np.ndarray, radius_px: int):
    """A random candidate pixel (row, col) whose neighbourhood is unoccupied, or None."""
    idx = np.flatnonzero(candidates)
    rng.shuffle(idx)
    ny, nx = candidates.shape
    for k in idx[:4000]:
        r, c = divmod(int(k), nx)
        if not occupied[max(0, r - radius_px) : r + radius_px, max(0, c - radius_px) : c + radius_px].any():
            return r, c
    return None


def _occupy(occupied: np.ndarray, f) -> None:
    occupied[f.r0 : f.r1, f.c0 : f.c1] = True


def generate_site(out: Path, spec: SiteSpec, seed: int, cells: int, site_index: int, n_strips: int | None = None
                  ) -> dict:
    """Generate one site: strips and truth. Returns a summary for the manifest."""
    t_start = time.time()
    rng = np.random.default_rng([seed, site_index, 4113])
    block = site_block(spec, cells)
    bx0 = min(c.bounds[0] for c in block)
    by0 = min(c.bounds[1] for c in block)
    bx1 = max(c.bounds[2] for c in block)
    by1 = max(c.bounds[3] for c in block)
    res = grid.RESOLUTION_M
    g = Grid(bx0 - MARGIN_M, by1 + MARGIN_M, res, int((by1 - by0 + 2 * MARGIN_M) / res),
             int((bx1 - bx0 + 2 * MARGIN_M) / res))
    m = int(MARGIN_M / res)
    block_win = (m, g.ny - m, m, g.nx - m)

    dates = plan_dates(rng, n=n_strips)
    t_first, t_last = days(dates[0]), days(dates[-1])
    record_years = list(range(dates[0].year, dates[-1].year + 1))
    anomalies = synth_climate.site_anomalies(rng, range(2009, 2024))

    z0, vdist, valleys = make_terrain(rng, g, spec.base_elevation_m, n_valleys=2)
    slope, ue, un = slope_aspect(ndimage.gaussian_filter(z0, 10.0), res)
    half_w = np.mean([v.half_width_m for v in valleys])

    inner = np.zeros(z0.shape, bool)  # features stay inside the block, off its outer edge
    pad = int(260.0 / res)
    inner[m + pad : g.ny - m - pad, m + pad : g.nx - m - pad] = True
    occupied = np.zeros(z0.shape, bool)
    wall = inner & (vdist > 0.3 * half_w) & (vdist < 0.6 * half_w) & (slope > 4.0) & (slope < 22.0)
    plateau = inner & (vdist > half_w + 80.0) & (slope < 4.0)

    features: list = []
    slumps: list[Slump] = []
    n_slumps = int(round(2.5 * cells * cells))
    # the first slump straddles an internal cell edge (the block's mid line)
    if cells >= 2:
        mid_c = m + int((grid.CELL_M / res))
        near_edge = np.zeros_like(wall)
        near_edge[:, mid_c - 20 : mid_c + 20] = True
        first_candidates = wall & near_edge
    else:
        first_candidates = wall
    for k in range(n_slumps):
        cand = first_candidates if k == 0 else wall
        pick = _pick(rng, cand, occupied, int(120 / res))
        if pick is None:
            continue
        r, c = pick
        s = make_slump(rng, g, f"{spec.key}-rts-{k + 1:02d}", (r, c), (float(ue[r, c]), float(un[r, c])),
                       record_years, anomalies, t_first, t_last, spec.depth_scale_m)
        features.append(s)
        slumps.append(s)
        _occupy(occupied, s)

    lookalikes: list = []
    water: list[WaterBody] = []
    pre_drain_dates = [d for d in dates if 2014 <= d.year <= 2019 and 6 <= d.month <= 9] or [dates[len(dates) // 2]]
    n_each = max(1, cells * cells // 2)
    for k in range(n_each):  # lakes that drain in one event
        pick = _pick(rng, plateau, occupied, int(180 / res))
        if pick is None:
            continue
        drain_day = days(pre_drain_dates[int(rng.integers(len(pre_drain_dates)))]) + float(rng.integers(3, 20))
        lake, _ = make_drained_lake(rng, g, z0, f"{spec.key}-drained-lake-{k + 1}", pick, drain_day)
        features.append(lake)
        lookalikes.append(lake)
        _occupy(occupied, lake)
        water.append(WaterBody(lake.r0, lake.r1, lake.c0, lake.c1, lake.delta_m < 0, 0.2, 0.0, lake.t_event))
    for _ in range(2):  # permanent lakes (water surfaces, mostly flagged)
        pick = _pick(rng, plateau, occupied, int(150 / res))
        if pick is None:
            continue
        (r0, r1, c0, c1), wm = make_permanent_lake(rng, g, z0, pick)
        water.append(WaterBody(r0, r1, c0, c1, wm, 0.9, 0.15))
        occupied[r0:r1, c0:c1] = True
    for _ in range(3 * cells * cells):  # small ponds: levels that swing, rarely in the water mask
        pick = _pick(rng, plateau, occupied, int(60 / res))
        if pick is None:
            continue
        (r0, r1, c0, c1), wm = make_permanent_lake(rng, g, z0, pick, radius_m=(25.0, 55.0))
        water.append(WaterBody(r0, r1, c0, c1, wm, 0.3, 0.6))
        occupied[r0:r1, c0:c1] = True
    hot_years = sorted(record_years[2:-1], key=lambda y: -anomalies.get(y, 0.0))
    slides = [("active_layer_detachment", "detachment", n_each + 1, {}),
              ("landslide", "landslide", n_each, dict(length_m=(120.0, 220.0), width_m=(45.0, 80.0), depth_m=(2.5, 6.0)))]
    for kind, label, count, shape in slides:  # one-off slides on valley sides, in hot summers
        for k in range(count):
            pick = _pick(rng, wall, occupied, int(200 / res))
            if pick is None:
                continue
            r, c = pick
            s0, e0 = season_bounds(hot_years[k % min(3, len(hot_years))])
            slide = make_detachment(rng, g, f"{spec.key}-{label}-{k + 1}", (r, c), (float(ue[r, c]), float(un[r, c])),
                                    float(rng.uniform(s0, e0)), kind=kind, **shape)
            features.append(slide)
            lookalikes.append(slide)
            _occupy(occupied, slide)
    for k in range(n_each):  # broad thermokarst subsidence
        pick = _pick(rng, plateau, occupied, int(350 / res))
        if pick is None:
            continue
        sub = make_subsidence(rng, g, f"{spec.key}-thermokarst-{k + 1}", pick, t_first - 30.0)
        features.append(sub)
        lookalikes.append(sub)
        _occupy(occupied, sub)

    # where spring snow drifts collect: lee slopes of valleys and slump scars
    snow_zone = ((slope > 5.0) & (vdist < half_w)).astype(np.float32)
    snow_zone = ndimage.gaussian_filter(snow_zone, 5.0)

    # ------------------------------------------------------------------ strips
    strips_dir = out / "strips" / spec.key
    acqs: list[Acquisition] = []
    styles = ["v4.1"] * len(dates)
    styles[int(rng.integers(1, len(dates) - 1))] = "v3"
    styles[int(rng.integers(1, len(dates) - 1))] = "cross-track"
    cx, cy = (bx0 + bx1) / 2, (by0 + by1) / 2
    for k, d in enumerate(dates):
        name, sensor = strip_name(rng, d, styles[k])
        n_clouds = int(rng.choice([0, 0, 0, 1, 2, 3]))
        mg = [int(rng.uniform(20, 280) / res) for _ in range(4)]
        win = (m - mg[0], g.ny - m + mg[1], m - mg[2], g.nx - m + mg[3])
        acq = Acquisition(
            name=name, site=spec.key, date=d.isoformat(), sensor=sensor,
            dx_m=float(np.clip(rng.normal(0, 2.5), -8, 8)), dy_m=float(np.clip(rng.normal(0, 2.5), -8, 8)),
            dz_m=float(np.clip(rng.normal(0, 2.5), -8, 8)),
            tilt_e=float(rng.normal(0, 5e-6)), tilt_n=float(rng.normal(0, 5e-6)), center_x=cx, center_y=cy,
            noise_sigma_m=float(rng.uniform(0.1, 0.25)), snow=d.month <= 5,
            partial=bool(rng.random() < 0.25) and 0 < k < len(dates) - 1,
            n_clouds=n_clouds, n_clouds_flagged=int(rng.integers(0, n_clouds + 1)),
            xmin=g.x0 + win[2] * res, xmax=g.x0 + win[3] * res, ymin=g.y1 - win[1] * res, ymax=g.y1 - win[0] * res,
        )
        t = days(d)
        z_t = surface_at(z0, features, t)
        dem, bm, mt, clouds = render_strip(rng, acq, g, z_t, win, water, t, snow_zone)
        write_strip(strips_dir, name, g, win, dem, bm, mt, clouds, out / "truth" / spec.key / "clouds")
        acqs.append(acq)

    # ------------------------------------------------------------------ truth
    truth = out / "truth"
    (truth / spec.key).mkdir(parents=True, exist_ok=True)
    r0, r1, c0, c1 = block_win
    z_first = surface_at(z0, features, t_first)
    z_last = surface_at(z0, features, t_last)
    true_dh = (z_last - z_first)[r0:r1, c0:c1]
    btransform = from_origin(bx0, by1, res, res)
    # 0 stable, 1 slump active, 2 slump debris, 3 drained lake, 4 slide, 5 thermokarst, 6 water
    klass = np.zeros(z0.shape, np.uint8)
    season = np.zeros(z0.shape, np.int16)
    change_time = np.full(z0.shape, np.nan, np.float32)
    for wb in water:
        if wb.until == float("inf"):
            klass[wb.r0 : wb.r1, wb.c0 : wb.c1][wb.mask] = 6

    slump_rows, yearly_rows = [], []
    for s in slumps:
        loss = np.where((s.t_exc > t_first) & (s.t_exc <= t_last), s.depth_m, 0.0)
        active = loss >= 1.0
        tr = from_origin(g.x0 + s.c0 * res, g.y1 - s.r0 * res, res, res)
        poly = mask_to_geometry(active, tr)
        if poly is None:
            continue
        box = (slice(s.r0, s.r1), slice(s.c0, s.c1))
        dep = s.change(t_last) - s.change(t_first)
        klass[box][(dep > 0.2) & (klass[box] == 0)] = 2
        klass[box][active] = 1
        exc_season = np.zeros(active.shape, np.int16)
        for y in range(dates[0].year - 1, dates[-1].year + 1):
            a, _ = season_bounds(y)
            b, _ = season_bounds(y + 1)
            in_y = (s.t_exc > max(a, t_first)) & (s.t_exc <= min(b, t_last)) & active
            exc_season[in_y] = y
            v = float(loss[in_y].sum() * res * res)
            if v > 0:
                yearly_rows.append({"slump_id": s.fid, "year": y, "volume_m3": v})
        season[box][active] = exc_season[active]
        change_time[box][active] = s.t_exc[active]
        cells_touched = cells_of(poly)
        slump_rows.append({
            "slump_id": s.fid, "site": spec.key, "region": spec.region, "geometry": poly,
            "area_m2": float(active.sum() * res * res), "volume_m3": float(loss[active].sum() * res * res),
            "mean_dh_m": float(-loss[active].mean()), "max_loss_m": float(loss.max()),
            "temperature_driven": s.temperature_driven, "initiation_year": s.initiation_year or 0,
            "crosses_cell_edge": len(cells_touched) > 1, "cells": " ".join(cells_touched),
        })
    look_rows = []
    for f in lookalikes:
        box = (slice(f.r0, f.r1), slice(f.c0, f.c1))
        delta = f.change(t_last) - f.change(t_first)
        if isinstance(f, Subsidence):
            mask = delta <= -0.5
            code, event = 5, ""
        else:
            mask = delta <= -0.5 if isinstance(f, StepFeature) and f.kind == "drained_lake" else np.abs(delta) >= 0.5
            code = 3 if f.kind == "drained_lake" else 4
            event = timebase.date_of(f.t_event).isoformat()
        tr = from_origin(g.x0 + f.c0 * res, g.y1 - f.r0 * res, res, res)
        poly = mask_to_geometry(mask, tr)
        if poly is None:
            continue
        klass[box][mask & (klass[box] == 0)] = code
        look_rows.append({"feature_id": f.fid, "site": spec.key, "kind": f.kind, "geometry": poly,
                          "area_m2": float(mask.sum() * res * res), "event_date": event,
                          "min_dh_m": float(delta.min())})

    profile = dict(driver="GTiff", crs="EPSG:3413", transform=btransform, width=c1 - c0, height=r1 - r0,
                   compress="deflate", tiled=True, blockxsize=256, blockysize=256)
    with rasterio.open(truth / spec.key / "true_dh.tif", "w", dtype="float32", count=1, **profile) as dst:
        dst.write(true_dh.astype(np.float32), 1)
    with rasterio.open(truth / spec.key / "class.tif", "w", dtype="uint8", count=1, **profile) as dst:
        dst.write(klass[r0:r1, c0:c1], 1)
    with rasterio.open(truth / spec.key / "change_season.tif", "w", dtype="int16", count=1, **profile) as dst:
        dst.write(season[r0:r1, c0:c1], 1)
    with rasterio.open(truth / spec.key / "change_time.tif", "w", dtype="float32", count=1, **profile) as dst:
        dst.write(change_time[r0:r1, c0:c1], 1)

    return {
        "site": spec.key, "name": spec.name, "region": spec.region, "lat": spec.lat, "lon": spec.lon,
        "cells": [c.id for c in block], "bounds_3413": [bx0, by0, bx1, by1],
        "n_strips": len(acqs), "first_date": dates[0].isoformat(), "last_date": dates[-1].isoformat(),
        "seconds": round(time.time() - t_start, 1),
        "_slumps": slump_rows, "_lookalikes": look_rows, "_yearly": yearly_rows,
        "_strips": [a.as_row() for a in acqs], "_anomalies": anomalies,
    }


TRUTH_README = """# Truth of the synthetic sample - EVALUATION ONLY

Nothing in this folder may be read by a pipeline stage. Tests, `rts evaluate` and the
benchmarks compare the pipeline's products against it.

- `slumps.parquet` - GeoParquet (EPSG:3413), one row per slump: its active-area polygon
  (ground that dropped >= 1 m between the site's first and last acquisition), `area_m2`,
  `volume_m3` (true loss inside the polygon), `temperature_driven` (its yearly losses follow
  the July-August anomaly), `initiation_year` (0: the scar predates the record),
  `crosses_cell_edge`, `cells`.
- `yearly_losses.csv` - true volume lost per slump per thaw season (year).
- `lookalikes.parquet` - look-alikes (drained lake, active-layer detachment, landslide, thermokarst) with
  their footprint, kind and event date.
- `strips.csv` - every strip's injected errors: `dx_m, dy_m` (a feature at (x, y) appears at
  (x + dx, y + dy)), `dz_m` (added at the block centre), tilts in m/m, snow, partial, clouds.
- `anomalies.csv` - each site's July-August temperature anomaly (deg C) per year.
- `<site>/true_dh.tif` - true elevation change between the first and last acquisition.
- `<site>/class.tif` - 0 stable, 1 slump active area, 2 slump debris, 3 drained lake,
  4 one-off slide (active-layer detachment or landslide), 5 thermokarst,
  6 permanent water (lakes and ponds).
- `<site>/change_season.tif` - for slump active pixels, the thaw season (year) they dropped in.
- `<site>/change_time.tif` - for slump active pixels, when they dropped (days since 2000-01-01).
- `<site>/clouds/<strip>_clouds.tif` - where each strip carries a cloud blunder (flagged or not).
"""


def _site_line(k, r: dict) -> str:
    return f"  site {k}: {r['n_strips']} strips, {len(r['_slumps'])} slumps ({r['seconds']} s)"


def generate_sample(out: str | Path, seed: int = 0, sites: list[str] | None = None, cells: int = 2,
                    workers: int = 2, log=print, n_strips: int | None = None) -> dict:
    """Generate the sample region into ``out`` (replacing what is there). Returns the manifest.
    ``n_strips``: every site a stack of exactly this many strips (default 10-20)."""
    out = Path(out)
    keys = list(sites or SITES)
    unknown = [k for k in keys if k not in SITES]
    if unknown:
        raise ValueError(f"unknown site(s) {', '.join(unknown)}; choose from {', '.join(SITES)}")
    if cells < 1 or cells > 25:
        raise ValueError("--cells must be between 1 and 25 (cells per block side)")
    for sub in ("strips", "stac", "climate", "truth"):
        shutil.rmtree(out / sub, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    indices = {k: i for i, k in enumerate(SITES)}
    results = []
    if workers > 1 and len(keys) > 1:
        with ProcessPoolExecutor(max_workers=min(workers, len(keys))) as pool:
            futs = [pool.submit(generate_site, out, SITES[k], seed, cells, indices[k], n_strips) for k in keys]
            for k, f in zip(keys, futs):
                results.append(f.result())
                log(_site_line(k, results[-1]))
    else:
        for k in keys:
            results.append(generate_site(out, SITES[k], seed, cells, indices[k], n_strips))
            log(_site_line(k, results[-1]))

    truth = out / "truth"
    truth.mkdir(exist_ok=True)
    (truth / "README.md").write_text(TRUTH_README)
    slumps = gpd.GeoDataFrame([r for res_ in results for r in res_["_slumps"]], geometry="geometry", crs="EPSG:3413")
    slumps.to_parquet(truth / "slumps.parquet")
    looks = gpd.GeoDataFrame([r for res_ in results for r in res_["_lookalikes"]], geometry="geometry", crs="EPSG:3413")
    looks.to_parquet(truth / "lookalikes.parquet")
    pd.DataFrame([r for res_ in results for r in res_["_yearly"]]).to_csv(truth / "yearly_losses.csv", index=False)
    pd.DataFrame([r for res_ in results for r in res_["_strips"]]).to_csv(truth / "strips.csv", index=False)
    pd.DataFrame([{"site": r["site"], "year": y, "ja_anomaly_c": a} for r in results for y, a in r["_anomalies"].items()]
                 ).to_csv(truth / "anomalies.csv", index=False)

    climate_sites = [(r["lat"], r["lon"], r["_anomalies"]) for r in results]
    paths = synth_climate.write_climate(out / "climate", climate_sites, range(2010, 2023), seed)


    strips = discover_strips(out / "strips")
    write_stac_catalog(strips, out / "stac", catalog_id="rts-sample",
                       description=f"Synthetic ArcticDEM-like strips of the RTS sample region (seed {seed})")

    manifest = {
        "generator_version": GENERATOR_VERSION, "seed": seed, "cells_per_side": cells,
        "sites": [{k: v for k, v in r.items() if not k.startswith("_")} for r in results],
        "n_strips": len(strips), "n_slumps": int(len(slumps)), "n_lookalikes": int(len(looks)),
        "climate": {k: str(p.relative_to(out)) for k, p in paths.items()},
        "stac": "stac/catalog.json", "seconds": round(time.time() - t0, 1),
    }
    (out / "sample.json").write_text(json.dumps(manifest, indent=2))
    return manifest
