"""Rule-based slump candidates from the per-cell change rasters (DESIGN step 6).

The reference study's criteria (Dai et al. 2025), each recorded per cluster:

1. a connected (8-neighbour) cluster of dh <= ``max_dh_m`` of at least ``min_area_m2``,
   holding at least one confident pixel that lost at least ``confident_min_loss_m`` (the
   reference's confidence flag asks dh < -2 m);
2. progressive retreat: the time of change spreads over more than
   ``min_time_spread_days`` within the cluster (the "rainbow" of t2 a retreating headwall
   draws; a lake drains, a slide fails, in one interval);
3. geomorphic consistency: the loss lies upslope of the gain (debris) found within
   ``gain_search_m`` (judged on the surface before the change, elevation - dh),
   the loss volume exceeds the gain volume, and at most
   ``max_gain_inside_fraction`` of the gain lies inside the hole-filled loss cluster.

Clusters are found on a mosaic of the cell and a halo of its neighbours' rasters; a
cluster belongs to the cell that holds its centroid, so a slump crossing a cell edge is
found once, whole, whichever cell is processed first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
import rasterio.features
import shapely
from rasterio.windows import from_bounds
from scipy import ndimage

from data_products import grid
from data_products.store import DH_RASTER, ProductsStore

from pipeline.dem.change import NODATA_DATE
from pipeline.config import CandidatesConfig
from pipeline.detection.evidence import FEATURES, VETO_FEATURES, cluster_features, criteria_features
from pipeline.quantify.volume import Variogram, empirical_variogram, fit_variogram, volume_and_sigma, yearly_volumes

MOSAIC_LAYERS = ("dh", "dh_sigma", "confidence", "t1", "t2", "elevation", "n_obs", "curvature", "n_before", "n_after")
COLUMNS = ["cell_id", "area_m2", "loss_m3", "volume_sigma_m3", "gain_m3", "max_loss_m", "time_spread_days", "confident",
           "progressive", "loss_upslope", "loss_exceeds_gain", "gain_inside_fraction", "geomorphic",
           "touches_edge", "criteria", *FEATURES, *VETO_FEATURES, "geometry"]


def empty_candidates() -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(columns=COLUMNS, geometry="geometry", crs=grid.CRS)


@dataclass
class Mosaic:
    """Rasters of a cell plus a halo from its neighbours (NaN / nodata where missing)."""

    cell: grid.Cell
    transform: rasterio.Affine
    layers: dict[str, np.ndarray]
    core: tuple[slice, slice]  # the cell itself within the mosaic


def read_mosaic(products: str | Path, cell: grid.Cell, halo_m: float, res: float = 2.0) -> Mosaic:
    """The cell's rasters with ``halo_m`` of its neighbours' around them (missing neighbours
    stay nodata). Reads only windows, never whole neighbour files."""
    products = Path(products)
    xmin, ymin, xmax, ymax = cell.bounds
    bounds = (xmin - halo_m, ymin - halo_m, xmax + halo_m, ymax + halo_m)
    shape = cell.shape(res, halo_m)
    transform = cell.transform(res, halo_m)
    layers = {
        "dh": np.full(shape, np.nan, np.float32), "dh_sigma": np.full(shape, np.nan, np.float32),
        "elevation": np.full(shape, np.nan, np.float32),
        "curvature": np.full(shape, np.nan, np.float32),
        "confidence": np.full(shape, 255, np.uint8), "t1": np.full(shape, NODATA_DATE, np.int32),
        "t2": np.full(shape, NODATA_DATE, np.int32), "n_obs": np.zeros(shape, np.int16),
        "n_before": np.full(shape, -1, np.int16), "n_after": np.full(shape, -1, np.int16),
    }
    store = ProductsStore(products)
    for other in grid.cells_in_bounds(bounds):
        folder = store.tile_dir(other.id)
        if not (folder / DH_RASTER).exists():
            continue
        ob = other.bounds
        ix0 = max(ob[0], bounds[0])
        iy0 = max(ob[1], bounds[1])
        ix1 = min(ob[2], bounds[2])
        iy1 = min(ob[3], bounds[3])
        if ix1 <= ix0 or iy1 <= iy0:
            continue
        r0 = int(round((bounds[3] - iy1) / res))
        c0 = int(round((ix0 - bounds[0]) / res))
        for name in MOSAIC_LAYERS:
            if not (folder / f"{name}.tif").exists():
                continue  # products of an older version: the layer stays nodata
            with rasterio.open(folder / f"{name}.tif") as src:
                a = src.read(1, window=from_bounds(ix0, iy0, ix1, iy1, src.transform))
            layers[name][r0 : r0 + a.shape[0], c0 : c0 + a.shape[1]] = a
    h = int(round(halo_m / res))
    return Mosaic(cell, transform, layers, (slice(h, shape[0] - h), slice(h, shape[1] - h)))


def stable_variogram(m: Mosaic, cfg: CandidatesConfig, res: float = 2.0) -> Variogram:
    """The dh error variogram on the mosaic's stable ground: pixels at least
    ``variogram_stable_buffer_px`` pixels away from any loss (dh <= ``max_dh_m``) or gain
    (dh >= ``gain_min_dh_m``)."""
    dh = m.layers["dh"]
    d0 = np.nan_to_num(dh, nan=0.0)
    changing = ndimage.binary_dilation((d0 <= cfg.max_dh_m) | (d0 >= cfg.gain_min_dh_m),
                                       iterations=cfg.variogram_stable_buffer_px)
    return fit_variogram(*empirical_variogram(dh, ~changing & np.isfinite(dh), res, max_lag_m=cfg.variogram_max_lag_m,
                                              n_pairs=cfg.variogram_n_pairs, n_bins=cfg.variogram_n_bins,
                                              seed=m.cell.ix * 31 + m.cell.iy))


def find_candidates(m: Mosaic, cfg: CandidatesConfig, res: float = 2.0, vg: Variogram | None = None
                    ) -> gpd.GeoDataFrame:
    """Candidate clusters whose centroid lies in the mosaic's core cell, with the three
    criteria evaluated. Geometry: the cluster's outline (EPSG:3413)."""
    dh = m.layers["dh"]
    px = res * res
    loss = np.nan_to_num(dh, nan=0.0) <= cfg.max_dh_m
    lab, n = ndimage.label(loss, structure=np.ones((3, 3), bool))
    if n == 0:
        return empty_candidates()
    idx = np.arange(1, n + 1)
    area = ndimage.sum_labels(np.ones_like(dh), lab, idx) * px
    big = idx[area >= cfg.min_area_m2]
    if big.size == 0:
        return empty_candidates()
    centres = np.array(ndimage.center_of_mass(loss, lab, big)).reshape(-1, 2)
    core_r, core_c = m.core
    inside = ((centres[:, 0] >= core_r.start) & (centres[:, 0] < core_r.stop)
              & (centres[:, 1] >= core_c.start) & (centres[:, 1] < core_c.stop))
    big = big[inside]
    if vg is None:  # error model of dh for the volume uncertainty
        vg = stable_variogram(m, cfg, res)
    t2 = m.layers["t2"].astype(np.float64)
    t2[m.layers["t2"] == NODATA_DATE] = np.nan
    elev = m.layers["elevation"]
    conf = m.layers["confidence"] == 1
    if "n_before" in m.layers and "n_after" in m.layers:
        support = np.minimum(m.layers["n_before"], m.layers["n_after"])
    else:  # rasters without support counts: every step counts as supported
        support = np.full(dh.shape, np.iinfo(np.int16).max, np.int16)
    gain_px = np.nan_to_num(dh, nan=0.0) >= cfg.gain_min_dh_m
    reach = int(round(cfg.gain_search_m / res))
    objects = ndimage.find_objects(lab)
    H, W = dh.shape
    rows = []
    for k in big:
        sl = objects[k - 1]
        r0, r1 = max(0, sl[0].start - reach), min(H, sl[0].stop + reach)
        c0, c1 = max(0, sl[1].start - reach), min(W, sl[1].stop + reach)
        box = (slice(r0, r1), slice(c0, c1))
        mine = lab[box] == k
        filled = ndimage.binary_fill_holes(mine)
        near = ndimage.distance_transform_edt(~mine) * res <= cfg.gain_search_m
        gain = gain_px[box] & near & ~mine
        d = dh[box]
        loss_m3, sigma_m3 = volume_and_sigma(d, mine, res, vg)
        gain_m3 = float(np.nansum(d[gain]) * px)
        times = t2[box][mine]
        times = times[np.isfinite(times)]
        spread = float(np.percentile(times, 90) - np.percentile(times, 10)) if times.size else 0.0
        e = elev[box] - d  # the surface before the change: the scar floor is lower than its debris now
        if gain.any() and np.isfinite(e[gain]).any() and np.isfinite(e[mine]).any():
            upslope = bool(np.nanmean(e[mine]) > np.nanmean(e[gain]))
        else:
            upslope = True  # no debris left (carried away by the stream)
        gain_inside = float((gain_px[box] & filled).sum() / max(1, (gain_px[box] & (filled | near)).sum()))
        touches = r0 == 0 or c0 == 0 or r1 == H or c1 == W
        geom = shapely.union_all([shapely.geometry.shape(g) for g, v in rasterio.features.shapes(
            mine.astype(np.uint8), mask=mine, transform=m.transform @ rasterio.Affine.translation(c0, r0),
            connectivity=8) if v == 1])
        confident = bool((conf[box] & mine & (np.nan_to_num(d, nan=0.0) <= -cfg.confident_min_loss_m)).any())
        evidence = cluster_features(d, t2[box], elev[box], conf[box], support[box], mine, gain, res)
        progressive = spread > cfg.min_time_spread_days
        geomorphic = upslope and loss_m3 > gain_m3 and gain_inside <= cfg.max_gain_inside_fraction
        n_criteria = int(confident) + int(confident and progressive) + int(confident and progressive and geomorphic)
        evidence.update({k: float(v) for k, v in criteria_features(n_criteria).items()})
        rows.append({
            "cell_id": m.cell.id, "area_m2": float(mine.sum() * px), "loss_m3": loss_m3, "volume_sigma_m3": sigma_m3,
            "gain_m3": gain_m3,
            "max_loss_m": float(-np.nanmin(d[mine])), "time_spread_days": spread, "confident": confident,
            "progressive": progressive, "loss_upslope": upslope, "loss_exceeds_gain": loss_m3 > gain_m3,
            "gain_inside_fraction": gain_inside, "geomorphic": geomorphic, "touches_edge": touches,
            "criteria": n_criteria, **evidence, "geometry": geom,
        })
    return gpd.GeoDataFrame(pd.DataFrame(rows, columns=COLUMNS), geometry="geometry", crs=grid.CRS)


def candidate_timeseries(m: Mosaic, found: gpd.GeoDataFrame, res: float = 2.0) -> pd.DataFrame:
    """Yearly volume loss of each candidate (rows: candidate index, year, volume_m3),
    binned on t2 over thaw seasons (:func:`pipeline.quantify.volume.yearly_volumes`)."""
    rows = []
    shape = m.layers["dh"].shape
    for i, geom in zip(found.index, found.geometry):
        mask = rasterio.features.geometry_mask([geom], shape, m.transform, invert=True)
        for year, v in yearly_volumes(m.layers["dh"], m.layers["t1"], m.layers["t2"], mask, res).items():
            rows.append({"candidate": i, "year": int(year), "volume_m3": float(v)})
    return pd.DataFrame(rows, columns=["candidate", "year", "volume_m3"])
