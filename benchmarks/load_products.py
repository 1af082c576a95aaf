"""Synthetic products folders for load tests and benchmarks of the catalog and dashboard.

**These files are synthetic load-test data, not results.** They follow the product
contract (:mod:`data_products.schema`) column for column so the catalog, the dashboard
and their benchmarks can be exercised at pan-Arctic scale (10^5-10^6 slumps) before or
without a real pipeline run. Every row carries ``pipeline_version = "synthetic-load-test"``
and the Parquet files carry the key ``rts:synthetic`` in their metadata; a
``SYNTHETIC_LOAD_TEST.txt`` file sits in the folder.

What is generated (all geometry EPSG:3413, metres):

* slump centroids clustered around the known RTS hotspots (the boxes of
  :data:`data_products.regions.REGIONS`) plus a thin scatter over the rest of the
  permafrost zone (60-80 °N), 8 %; every slump on land (the Natural Earth layer of
  :mod:`data_products.land`);
* an amphitheatre-like 12-vertex polygon per slump, vertices on the 2 m raster grid,
  area log-normal (median ~1.2 ha, floor 2,000 m², the minimum mapping unit);
* volumes from the area and a log-normal mean loss (median ~2.5 m), uncertainties,
  first/last change dates in thaw seasons 2012-2022, yearly volumes whose temperature
  dependence is strong for about a third of the slumps (so r >= 0.5 for roughly 30 %,
  as in Dai et al. 2025), Pearson r and p against a regional summer-temperature series;
* ``tiles.parquet`` with one 2 km cell footprint per owning cell (plus a few failed and
  empty cells) and, optionally, ``tiles/<tile_id>/dh.tif`` and ``t2.tif`` COGs for a few
  cells with the slumps burnt in (dh negative inside, a t2 "rainbow" across each slump);
* ``data_dictionary.md`` / ``.json`` from the schema.

The inventory is spatially sorted along a Hilbert curve (level 16 over the data's
bounds), written as GeoParquet 1.1 (WKB, ``bbox`` covering column, zstd).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pyproj import Transformer

from data_products import grid, ids, schema, timebase, writers
from data_products.store import ProductsStore
from data_products.regions import REGIONS, region_of

SYNTHETIC_VERSION = "synthetic-load-test"
YEARS = tuple(range(2012, 2023))
_N_VERTICES = 12
_SEASON_START = (6, 20)  # 20 June
_SEASON_DAYS = 94        # to 22 September
_ROW_GROUP = 50_000
_SYNTHETIC_KEY = b"rts:synthetic"
_SYNTHETIC_NOTE = b"synthetic load-test data written by benchmarks.load_products; not results"

_TO_3413 = Transformer.from_crs("EPSG:4326", schema.CRS, always_xy=True)
_TO_4326 = Transformer.from_crs(schema.CRS, "EPSG:4326", always_xy=True)


def _land():
    """Arctic land (EPSG:3413) from the committed Natural Earth layer, prepared for point tests."""
    from data_products.land import land_polygons

    g = shapely.union_all([shapely.polygons(r[0], holes=r[1:] or None) for r in land_polygons()])
    shapely.prepare(g)
    return g


def _centroids_lonlat(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Clustered slump locations: 92 % in hotspot clusters, 8 % scattered over 60-80 °N."""
    n_hot = int(round(n * 0.92))
    weights = np.array([5, 3, 2, 2, 2, 1, 1, 1, 0.5])[: len(REGIONS)]
    weights = weights / weights.sum()
    n_clusters = max(20, min(2000, n // 50))
    box = rng.choice(len(REGIONS), size=n_clusters, p=weights)
    b = np.array([r[1:] for r in REGIONS])[box]
    c_lon = rng.uniform(b[:, 0], b[:, 1])
    c_lat = rng.uniform(b[:, 2], b[:, 3])
    # valleys ~15 km around a cluster centre, slumps ~1 km around a valley (degrees of latitude;
    # longitude offsets scaled by 1/cos(lat))
    n_valleys = max(n_clusters, n_hot // 12)
    which = rng.integers(0, n_clusters, n_valleys)
    v_lat = c_lat[which] + rng.normal(0, 0.14, n_valleys)
    v_lon = c_lon[which] + rng.normal(0, 0.14, n_valleys) / np.cos(np.radians(v_lat))
    valley = rng.integers(0, n_valleys, n_hot)
    lat = v_lat[valley] + rng.normal(0, 0.008, n_hot)
    lon = v_lon[valley] + rng.normal(0, 0.008, n_hot) / np.cos(np.radians(lat))
    n_rest = n - n_hot
    scatter = rng.uniform(-180, 180, n_rest)
    ice = (scatter > -55) & (scatter < -20)  # keep the scatter off the Greenland ice sheet
    scatter[ice] = rng.uniform(-180, -60, ice.sum())
    lon = np.concatenate([lon, scatter])
    lat = np.concatenate([lat, np.degrees(np.arcsin(rng.uniform(np.sin(np.radians(60)), np.sin(np.radians(80)),
                                                                 n_rest)))])
    lon = ((lon + 180.0) % 360.0) - 180.0
    return lon, np.clip(lat, 55.0, 84.0)


def _polygons(rng: np.random.Generator, x: np.ndarray, y: np.ndarray, area: np.ndarray) -> np.ndarray:
    """Amphitheatre-like polygons (an ellipse flattened on its downslope side), vertices on the 2 m grid."""
    n = len(x)
    theta = np.linspace(0, 2 * np.pi, _N_VERTICES, endpoint=False)
    aspect = rng.uniform(0.6, 1.0, n)
    rot = rng.uniform(0, 2 * np.pi, n)
    wobble = 1.0 + 0.12 * rng.standard_normal((n, _N_VERTICES))
    shape = np.where(np.sin(theta) < 0, 0.55, 1.0)[None, :] * wobble  # flattened toe
    # area of the unit shape (shoelace) to scale to the target area
    ux = np.cos(theta)[None, :] * shape
    uy = np.sin(theta)[None, :] * shape * aspect[:, None]
    a_unit = 0.5 * np.abs(np.sum(ux * np.roll(uy, -1, 1) - np.roll(ux, -1, 1) * uy, axis=1))
    s = np.sqrt(area / a_unit)[:, None]
    px = (ux * np.cos(rot)[:, None] - uy * np.sin(rot)[:, None]) * s
    py = (ux * np.sin(rot)[:, None] + uy * np.cos(rot)[:, None]) * s
    px = np.round((px + x[:, None]) / 2.0) * 2.0
    py = np.round((py + y[:, None]) / 2.0) * 2.0
    coords = np.stack([px, py], axis=-1)
    coords = np.concatenate([coords, coords[:, :1]], axis=1)
    polys = shapely.polygons(coords)
    bad = ~shapely.is_valid(polys)
    if bad.any():
        polys[bad] = shapely.make_valid(polys[bad])
        polys[bad] = [g if g.geom_type == "Polygon" else max(getattr(g, "geoms", [g]), key=lambda q: q.area)
                      for g in polys[bad]]
    return polys


def _cell_ids(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    ix = np.floor((x - grid.ORIGIN_M) / grid.CELL_M).astype(np.int64)
    iy = np.floor((y - grid.ORIGIN_M) / grid.CELL_M).astype(np.int64)
    keys = ix * 10_000_000 + iy
    uniq, inv = np.unique(keys, return_inverse=True)
    names = np.array([grid.Cell(int(k // 10_000_000), int(k % 10_000_000)).id for k in uniq], dtype=object)
    return names[inv]


rts_id_for = ids.rts_id  # the id the pipeline gives a slump centred at EPSG:3413 (x, y) m


def _summer_temperature(rng: np.random.Generator, regions: list[str]) -> dict[str, np.ndarray]:
    """A summer (July-August) mean 2 m temperature series per region, °C, with a warming trend."""
    out = {}
    for name in sorted(set(regions)):
        base = 6.0 + 3.0 * rng.random()
        trend = 0.05 * (np.arange(len(YEARS)) - len(YEARS) / 2)
        out[name] = np.round(base + trend + rng.normal(0, 1.1, len(YEARS)), 2)
    return out


def _pearson(v: np.ndarray, t: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise Pearson r of v against t over the masked years, and its two-sided p-value."""
    from scipy import stats

    n = mask.sum(1).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        mv = np.where(mask, v, 0).sum(1) / n
        mt = np.where(mask, t, 0).sum(1) / n
        dv = np.where(mask, v - mv[:, None], 0)
        dtt = np.where(mask, t - mt[:, None], 0)
        r = (dv * dtt).sum(1) / np.sqrt((dv ** 2).sum(1) * (dtt ** 2).sum(1))
        r = np.clip(r, -1, 1)
        tstat = r * np.sqrt((n - 2) / np.maximum(1e-12, 1 - r ** 2))
        p = 2 * stats.t.sf(np.abs(tstat), np.maximum(n - 2, 1))
    ok = (n >= 3) & np.isfinite(r)
    return np.where(ok, r, np.nan), np.where(ok, p, np.nan)


def make_tables(n_slumps: int, seed: int = 0, timeseries: bool = True
                ) -> tuple[gpd.GeoDataFrame, pd.DataFrame, gpd.GeoDataFrame]:
    """Inventory, time series and tiles tables of ``n_slumps`` synthetic slumps (schema column order)."""
    rng = np.random.default_rng(seed)
    lon, lat = _centroids_lonlat(rng, int(n_slumps * 2.5) + 50)
    x, y = _TO_3413.transform(lon, lat)
    x, y = np.asarray(x), np.asarray(y)
    on_land = np.flatnonzero(shapely.contains_xy(_land(), x, y))  # slumps are on land
    cand = rng.permutation(on_land)[: int(n_slumps * 1.05) + 10]
    rids = np.array([rts_id_for(a, b) for a, b in zip(x[cand], y[cand])], dtype=object)
    _, first = np.unique(rids, return_index=True)
    keep = cand[np.sort(first)[:n_slumps]]
    rids = np.array([rts_id_for(a, b) for a, b in zip(x[keep], y[keep])], dtype=object)
    lon, lat, x, y = lon[keep], lat[keep], x[keep], y[keep]
    n = len(rids)

    area = np.maximum(2_000.0, np.exp(rng.normal(np.log(12_000.0), 0.9, n)))
    geom = _polygons(rng, x, y, area)
    area = shapely.area(geom)
    cen = shapely.centroid(geom)
    cx, cy = shapely.get_x(cen), shapely.get_y(cen)
    clon, clat = _TO_4326.transform(cx, cy)
    regions = [region_of(a, b) for a, b in zip(clon, clat)]
    mean_loss = np.exp(rng.normal(np.log(2.5), 0.5, n))
    volume = area * mean_loss
    sigma = volume * rng.uniform(0.04, 0.12, n) + 0.3 * np.sqrt(area) * 2.0

    ny = len(YEARS)
    y0 = rng.integers(0, ny - 1, n)
    span = np.minimum(ny - y0, 1 + rng.poisson(4.0, n))
    span = np.maximum(span, 1)
    y1 = y0 + span - 1
    first_change = [dt.date(YEARS[a], *_SEASON_START) + dt.timedelta(days=int(d))
                    for a, d in zip(y0, rng.integers(0, _SEASON_DAYS, n))]
    last_change = [dt.date(YEARS[b], *_SEASON_START) + dt.timedelta(days=int(d))
                   for b, d in zip(y1, rng.integers(0, _SEASON_DAYS, n))]
    years_active = np.maximum(0.25, span.astype(float))

    temps = _summer_temperature(rng, regions)
    t_table = np.stack([temps[r] for r in regions])
    yi = np.arange(ny)[None, :]
    active = (yi >= y0[:, None]) & (yi <= y1[:, None])
    driven = rng.random(n) < 0.3
    anomaly = t_table - t_table.mean(1, keepdims=True)
    w = np.exp(np.where(driven[:, None], 0.6, 0.0) * anomaly + rng.normal(0, 0.45, (n, ny)))
    w = np.where(active, w, 0.0)
    yearly = volume[:, None] * w / w.sum(1, keepdims=True)
    r, p = _pearson(yearly, t_table, active)
    note = np.where(span < 3, "fewer than 3 thaw seasons", None)

    inv = gpd.GeoDataFrame({
        "rts_id": rids,
        "tile_id": _cell_ids(cx, cy),
        "region": regions,
        "geometry": geom,
        "centroid_lat": np.round(clat, 6),
        "centroid_lon": np.round(clon, 6),
        "area_m2": np.round(area, 1),
        "volume_m3": np.round(volume, 1),
        "volume_sigma_m3": np.round(sigma, 1),
        "mean_dh_m": np.round(-mean_loss, 3),
        "max_loss_m": np.round(mean_loss * rng.uniform(1.8, 3.5, n), 3),
        "first_change": first_change,
        "last_change": last_change,
        "n_dems": rng.integers(4, 40, n).astype(np.int32),
        "volume_rate_m3_yr": np.round(volume / years_active, 1),
        "carbon_kg_yr": np.round(volume / years_active * 12.0, 1),
        "carbon_density_kg_m3": np.full(n, 12.0),
        "r_temperature": np.round(r, 4),
        "p_temperature": p,
        "temperature_note": note,
        "n_years": span.astype(np.int32),
        "detector": np.where(rng.random(n) < 0.8, "maskrcnn", "rules"),
        "detector_score": np.round(rng.beta(6, 2, n), 3),
        "criteria": rng.choice(np.array([1, 2, 3], dtype=np.int8), n, p=[0.1, 0.3, 0.6]),
        "pipeline_version": SYNTHETIC_VERSION,
        "processed_at": pd.Timestamp("2025-01-01T00:00:00Z").as_unit("s"),
    }, geometry="geometry", crs=schema.CRS)
    inv.loc[inv.detector == "rules", "detector_score"] = 1.0
    inv["processed_at"] = inv["processed_at"].astype("datetime64[s, UTC]")
    order = np.argsort(inv.geometry.hilbert_distance(total_bounds=(-4e6, -4e6, 4e6, 4e6)).to_numpy(),
                       kind="stable")
    inv = inv.iloc[order].reset_index(drop=True)

    ts = pd.DataFrame(columns=schema.names(schema.TIMESERIES_COLUMNS))
    if timeseries:
        rows, cols = np.nonzero(active[order])
        yv = yearly[order][rows, cols]
        ts = pd.DataFrame({
            "rts_id": inv.rts_id.to_numpy()[rows],
            "year": np.array(YEARS, dtype=np.int16)[cols],
            "volume_m3": np.round(yv, 1),
            "volume_sigma_m3": np.round(yv * 0.1 + 20.0, 1),
            "summer_t2m_c": t_table[order][rows, cols],
        })

    g = inv.groupby("tile_id", sort=False).agg(n_slumps=("rts_id", "size"), volume_m3=("volume_m3", "sum"))
    tids = list(g.index)
    boxes = [grid.parse_cell_id(t).bounds for t in tids]
    tiles = gpd.GeoDataFrame({
        "tile_id": tids,
        "geometry": shapely.box(*np.array(boxes).T),
        "status": "ok",
        "n_strips": rng.integers(4, 60, len(tids)).astype(np.int32),
        "n_slumps": g.n_slumps.to_numpy().astype(np.int32),
        "volume_m3": g.volume_m3.to_numpy(),
        "inputs_digest": [f"synthetic-{seed}-{i}" for i in range(len(tids))],
        "seconds": np.round(rng.uniform(20, 200, len(tids)), 1),
        "processed_at": pd.Timestamp("2025-01-01T00:00:00Z").as_unit("s"),
        "error": None,
    }, geometry="geometry", crs=schema.CRS)
    tiles["processed_at"] = tiles["processed_at"].astype("datetime64[s, UTC]")
    # a few cells that did not yield slumps, to exercise status colouring
    if len(tiles) >= 4:
        extra = []
        for k, status, err in ((1, "too_few_dems", "2 strips cover the cell, 3 needed"),
                               (2, "failed", "synthetic failure for load tests")):
            c = grid.parse_cell_id(tids[k])
            nb = grid.Cell(c.ix + 1, c.iy + 1)
            if nb.id not in g.index:
                extra.append({"tile_id": nb.id, "geometry": shapely.box(*nb.bounds), "status": status,
                              "n_strips": np.int32(2), "n_slumps": np.int32(0), "volume_m3": 0.0,
                              "inputs_digest": None, "seconds": 3.0, "processed_at": tiles.processed_at.iloc[0],
                              "error": err})
        if extra:
            tiles = pd.concat([tiles, gpd.GeoDataFrame(extra, geometry="geometry", crs=schema.CRS)],
                              ignore_index=True)
    tiles["n_strips"] = tiles.n_strips.astype(np.int32)
    tiles["n_slumps"] = tiles.n_slumps.astype(np.int32)
    return inv, ts, tiles


def write_rasters(inv: gpd.GeoDataFrame, out: Path, tile_ids: list[str]) -> None:
    """dh and t2 COGs (2 m, the cell grid) for ``tile_ids`` with the cell's slumps burnt in."""
    import rasterio
    from rasterio.features import rasterize

    for tid in tile_ids:
        cell = grid.parse_cell_id(tid)
        h, w = cell.shape()
        tr = cell.transform()
        rng = np.random.default_rng(int(hashlib.sha256(tid.encode()).hexdigest()[:8], 16))  # stable per cell
        dh = rng.normal(0, 0.25, (h, w)).astype("float32")
        t2 = np.full((h, w), -9999, dtype="int32")
        xmin, ymin, xmax, ymax = cell.bounds
        sub = inv.cx[xmin - 500:xmax + 500, ymin - 500:ymax + 500]
        for g, mean_dh, first, last in zip(sub.geometry, sub.mean_dh_m, sub.first_change, sub.last_change):
            m = rasterize([(g, 1)], out_shape=(h, w), transform=tr, fill=0, dtype="uint8").astype(bool)
            if not m.any():
                continue
            rows, cols = np.nonzero(m)
            # distance along the slump's long axis: headwall (late t2, deep) to toe (early t2, shallow)
            d = (cols - cols.min()) / max(1, cols.max() - cols.min())
            dh[rows, cols] = (2.0 * mean_dh * (0.3 + 0.7 * d)).astype("float32")
            d0 = timebase.days_since_epoch(first)
            d1 = timebase.days_since_epoch(last)
            t2[rows, cols] = (d0 + d * (d1 - d0)).astype("int32")
        folder = ProductsStore(out).tile_dir(tid)
        folder.mkdir(parents=True, exist_ok=True)
        for name, arr in (("dh", dh), ("t2", t2)):
            _, nodata, desc = schema.CELL_RASTERS[name]
            with rasterio.open(folder / f"{name}.tif", "w", driver="COG", width=w, height=h, count=1,
                               dtype=arr.dtype, crs=grid.CRS, transform=tr, nodata=nodata, compress="deflate",
                               blocksize=512, overviews="NONE") as dst:
                dst.write(arr, 1)
                dst.set_band_description(1, desc)
                dst.update_tags(synthetic="load-test data")


def write_tables(out: Path, inv: gpd.GeoDataFrame, ts: pd.DataFrame, tiles: gpd.GeoDataFrame, seed: int = 0) -> None:
    """Write the three tables (GeoParquet 1.1 / Parquet, zstd), the data dictionary and the synthetic label."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tag = {_SYNTHETIC_KEY: _SYNTHETIC_NOTE}  # the project's own writers, with the load-test label
    writers.write_geoparquet(inv, out / schema.INVENTORY, schema.INVENTORY_COLUMNS, sort=False, metadata=tag)
    writers.write_geoparquet(tiles, out / schema.TILES, schema.TILES_COLUMNS, sort=False, metadata=tag)
    writers.write_parquet(ts, out / schema.TIMESERIES, schema.TIMESERIES_COLUMNS, metadata=tag)
    (out / schema.DICTIONARY_MD).write_text(schema.dictionary_markdown())
    (out / schema.DICTIONARY_JSON).write_text(json.dumps(schema.dictionary_json(), indent=1))
    (out / "SYNTHETIC_LOAD_TEST.txt").write_text(
        "Synthetic load-test products written by benchmarks.load_products (seed %d, %d slumps).\n"
        "They follow the product contract but are NOT measurements.\n" % (seed, len(inv)))


def generate_products(out: Path | str, n_slumps: int = 100_000, seed: int = 0, raster_tiles: int = 0,
                      timeseries: bool = True) -> dict:
    """Write a synthetic, schema-conformant products folder to ``out``; returns a summary.

    ``raster_tiles`` cells (those holding the most slumps) also get dh/t2 COGs.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    inv, ts, tiles = make_tables(n_slumps, seed=seed, timeseries=timeseries)
    write_tables(out, inv, ts, tiles, seed=seed)
    busiest = tiles.sort_values("n_slumps", ascending=False).tile_id.head(raster_tiles).tolist()
    if busiest:
        write_rasters(inv, out, busiest)
    return {"n_slumps": len(inv), "n_timeseries": len(ts), "n_tiles": len(tiles), "raster_tiles": busiest,
            "path": str(out)}


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="Write a synthetic load-test products folder.")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("-n", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--raster-tiles", type=int, default=3)
    a = ap.parse_args()
    print(generate_products(a.out, a.n, a.seed, a.raster_tiles))
