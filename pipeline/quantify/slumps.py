"""Quantification (DESIGN steps 8-9): each detected slump's volume, its uncertainty, its
yearly losses, carbon and temperature response, as rows of the product tables.

Per slump, on the cell mosaic (EPSG:3413, 2 m):

* V = -A_px * sum(dh) over the polygon and a ``volume_margin_m`` margin (the headwall's
  cliff is blurred over a pixel or two; part of its loss lies just outside), sigma_V from the stable-ground variogram
  (:mod:`pipeline.quantify.volume`, Rolstad et al. 2009);
* yearly volumes binned on t2 over thaw seasons (20 Jun - 22 Sep, a season counting when
  at least a quarter of it lies between t1 and t2; Dai et al. 2025), each with the sigma of
  the area that changed that season;
* the volume rate V / (latest t2 - earliest t1) and carbon = rate x carbon density
  (12 kg C m-3 by default, as Dai et al. 2025, or sampled from a gridded soil-carbon raster);
* Pearson r and p of yearly volume against summer (July-August) air temperature at the
  nearest climate-grid cell, over the thaw seasons wholly inside the record, for slumps with
  at least three of them; otherwise r is empty and ``temperature_note`` says why.

Regional and Arctic-wide yearly totals and the volume-temperature slope are in
:func:`regional_totals`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
import rasterio.features
from pyproj import Transformer
from scipy import ndimage

from data_products import grid, ids, schema, timebase
from data_products.regions import region_of

from pipeline import __version__
from pipeline.dem.change import NODATA_DATE
from pipeline.quantify.carbon import CarbonDensity
from pipeline.quantify.climate import Climate, interval_temperature_response
from pipeline.config import Config, QuantifyConfig
from pipeline.quantify.volume import Variogram, interval_losses, sigma_mean_dh, volume_and_sigma, yearly_loss

log = logging.getLogger(__name__)

TO_LONLAT = Transformer.from_crs(grid.CRS, "EPSG:4326", always_xy=True)





def _date(days: float):
    return timebase.date_of(days)


def rim_depth(dh: np.ndarray, mask: np.ndarray, band_px: int = 2) -> float:
    """Mean loss (m, positive for a drop, never negative) of the ``band_px`` pixels just
    inside ``mask``'s edge: the depth at which an error in the outline's position counts."""
    rim = mask & ~ndimage.binary_erosion(mask, iterations=band_px)
    vals = dh[rim & np.isfinite(dh)]
    return max(float(-vals.mean()), 0.0) if vals.size else 0.0


@dataclass(frozen=True)
class SigmaTerms:
    """The raw (unscaled) terms of a slump's volume uncertainty (see :func:`volume_sigma`):
    two in m3 and the outline's in m2 (it becomes m3 times a band width)."""

    #: the stable-ground variogram integral over the slump (:func:`pipeline.quantify.volume.volume_and_sigma`)
    elevation_m3: float
    #: perimeter (m) x rim depth (m): times a band width (m) it is the outline term
    outline_m2: float
    #: the step model's per-pixel sigma summed over the pixels that dropped (:func:`step_sigma`)
    step_m3: float


def volume_sigma(terms: SigmaTerms, volume_m3, cfg: QuantifyConfig):
    """The published 1-sigma of a slump's volume (m3), four terms in quadrature (the terms
    and volume may be arrays, one value per slump):

    * elevation: the stable-ground variogram integral, scaled by ``cfg.elevation_sigma_scale``;
    * outline: a band ``cfg.outline_sigma_m`` wide along the perimeter at the rim's depth;
    * step: the step model's own posterior sigma summed over the pixels that dropped
      (:func:`step_sigma`), scaled by ``cfg.step_sigma_scale``. It is largest where the levels
      rest on few or scattered observations (short records, late snow, clouds), which the
      stable-ground variogram does not see;
    * model: ``cfg.model_sigma_fraction`` x |V|, the share of a volume the DEM record itself
      can get wrong whatever its scatter (a scar measured short under shoulder-season snow,
      an outline a pixel off around a steep rim): biases the first three terms, built from
      the DEMs' own scatter, cannot see.

    On the fitting samples the volume errors scale with perimeter x rim depth (RMS 0.9-1.6 m
    of band on both scene families) and with the summed step sigma (RMS ratio 0.5-1.0 on
    both), while the variogram term's ratio differs sixfold between the families."""
    return np.sqrt((cfg.elevation_sigma_scale * terms.elevation_m3) ** 2
                   + (cfg.outline_sigma_m * terms.outline_m2) ** 2
                   + (cfg.step_sigma_scale * terms.step_m3) ** 2
                   + (cfg.model_sigma_fraction * volume_m3) ** 2)


def slump_volume(dh: np.ndarray, dh_sigma: np.ndarray, mask: np.ndarray, perimeter_m: float, res: float,
                 vg: Variogram, cfg: Config) -> tuple[float, SigmaTerms, np.ndarray]:
    """A slump's volume (m3, positive for a loss), its raw uncertainty terms and the pixels
    that dropped (``dh <= cfg.candidates.max_dh_m`` inside ``mask``), on a mosaic's 2 m grid.

    V integrates dh over ``mask`` (the polygon's finite pixels) plus a
    ``cfg.quantify.volume_margin_m`` margin."""
    margin = int(round(cfg.quantify.volume_margin_m / res))
    vmask = (ndimage.binary_dilation(mask, iterations=margin) if margin > 0 else mask) & np.isfinite(dh)
    volume, elevation = volume_and_sigma(dh, vmask, res, vg)
    dropped = mask & (dh <= cfg.candidates.max_dh_m)
    terms = SigmaTerms(elevation_m3=elevation, outline_m2=perimeter_m * rim_depth(dh, mask),
                       step_m3=step_sigma(dh_sigma, dropped, res))
    return volume, terms, dropped


def step_sigma(dh_sigma: np.ndarray, dropped: np.ndarray, res: float) -> float:
    """A_px * sum of the step model's per-pixel sigma (m) over the pixels that dropped (m3):
    the volume error if the pixels' level errors were fully correlated."""
    return float(np.nansum(dh_sigma[dropped]) * res * res)


def quantify(mosaic, detections: gpd.GeoDataFrame, vg: Variogram, cfg: Config, climate: Climate,
             carbon: CarbonDensity, processed_at: pd.Timestamp, epochs: list[str] | tuple = ()
             ) -> tuple[gpd.GeoDataFrame, pd.DataFrame]:
    """Inventory rows and yearly rows for the slumps detected in one cell's mosaic.

    ``detections``: polygons (EPSG:3413) with ``detector``, ``detector_score``, ``criteria``.
    ``epochs``: the dates of the cell's DEMs (ISO); r is computed over the intervals
    between them (:func:`pipeline.quantify.volume.interval_losses`,
    :func:`pipeline.quantify.climate.interval_temperature_response`).
    Returns (inventory part as a GeoDataFrame with the schema's columns, time-series part)."""
    res = cfg.grid.resolution_m
    L = mosaic.layers
    dh = L["dh"]
    t1 = L["t1"].astype(np.float64)
    t2 = L["t2"].astype(np.float64)
    t1[L["t1"] == NODATA_DATE] = np.nan
    t2[L["t2"] == NODATA_DATE] = np.nan
    inv_rows, ts_rows = [], []
    epoch_days = [timebase.days_since_epoch(d) for d in epochs]
    if len(detections):
        cx = detections.geometry.centroid.x.to_numpy()
        cy = detections.geometry.centroid.y.to_numpy()
        lon, lat = TO_LONLAT.transform(cx, cy)
        dens = carbon.at(cx, cy)
    for k, (geom, det) in enumerate(zip(detections.geometry, detections.itertuples())):
        mask = rasterio.features.geometry_mask([geom], dh.shape, mosaic.transform, invert=True)
        mask &= np.isfinite(dh)
        if not mask.any():
            continue
        rid = ids.rts_id(cx[k], cy[k])
        # the time of change is only meaningful where the ground really dropped (``sig``):
        # pixels the polygon holds without a significant loss (filled holes, edges) carry noise dates
        volume, terms, sig = slump_volume(dh, L["dh_sigma"], mask, geom.length, res, vg, cfg)
        sigma = float(volume_sigma(terms, volume, cfg.quantify))
        if not sig.any():
            sig = mask
        a, b = t1[sig], t2[sig]
        first, last = (np.nanmin(b), np.nanmax(b)) if np.isfinite(b).any() else (np.nan, np.nan)
        start = np.nanmin(a) if np.isfinite(a).any() else np.nan
        span_yr = (last - start) / 365.25 if np.isfinite(last) and np.isfinite(start) else np.nan
        rate = volume / span_yr if span_yr and np.isfinite(span_yr) and span_yr > 0 else np.nan
        yearly = yearly_loss(dh, L["t1"], L["t2"], sig, res)
        binned = yearly.volume_m3.sum()
        if binned > 0:  # the loss of the other pixels is shared in proportion, so years add up to V
            yearly["volume_m3"] *= volume / binned
        summer, note = climate.summer_at(float(lat[k]), float(lon[k]))
        intervals = interval_losses(dh, L["t1"], L["t2"], sig, res, epoch_days, cfg.quantify.min_interval_seasons)
        r, p, _, why = interval_temperature_response(intervals, summer, cfg.quantify.min_intervals)
        if note:
            why = note
        for year, row in yearly.iterrows():
            ts_rows.append({
                "rts_id": rid, "year": int(year), "volume_m3": float(row.volume_m3),
                "volume_sigma_m3": float(row.area_m2 * sigma_mean_dh(row.area_m2, res, vg)),
                "summer_t2m_c": float(summer.get(year, np.nan)),
            })
        inv_rows.append({
            "rts_id": rid, "tile_id": mosaic.cell.id, "region": region_of(lon[k], lat[k]), "geometry": geom,
            "centroid_lat": float(lat[k]), "centroid_lon": float(lon[k]), "area_m2": float(geom.area),
            "volume_m3": volume, "volume_sigma_m3": sigma, "mean_dh_m": float(np.nanmean(dh[mask])),
            "max_loss_m": float(-np.nanmin(dh[mask])), "first_change": _date(first), "last_change": _date(last),
            "n_dems": int(L["n_obs"][mask].max()), "volume_rate_m3_yr": float(rate),
            "carbon_kg_yr": float(rate * dens[k]), "carbon_density_kg_m3": float(dens[k]),
            "r_temperature": r if np.isfinite(r) else None, "p_temperature": p if np.isfinite(p) else None,
            "temperature_note": why or None, "n_years": int(len(yearly)), "detector": det.detector,
            "detector_score": float(det.detector_score), "criteria": int(det.criteria),
            "pipeline_version": __version__, "processed_at": processed_at,
        })
    inv = pd.DataFrame(inv_rows, columns=schema.names(schema.INVENTORY_COLUMNS))
    inventory = gpd.GeoDataFrame(inv, geometry="geometry", crs=grid.CRS)
    timeseries = pd.DataFrame(ts_rows, columns=schema.names(schema.TIMESERIES_COLUMNS))
    return inventory, timeseries


