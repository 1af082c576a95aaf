"""Calibrating the published volume uncertainty on fitting samples.

A slump's 1-sigma (:func:`pipeline.quantify.slumps.volume_sigma`) is four terms in
quadrature: the stable-ground variogram integral, an outline band, the step model's own
sigma and a model term, a share of |V|. Their scales are not physical constants but
calibration factors, so they are set where the truth is known:

* :func:`sigma_table` - for each published slump matched (IoU >= 0.5) to a true one, its
  volume, the true volume and the raw terms, recomputed from the products' own rasters and
  the cell's recorded variogram exactly as ``rts run`` computed them;
* :func:`coverage` - the share of true volumes within 1 and 2 sigma for given scales;
* :func:`fit_sigma` - the step scale and model fraction that bring each family's coverage
  nearest 68 % (1 sigma) and 95 % (2 sigma), the elevation scale and outline band held.

Only fitting samples may go in: a scale chosen on the seeds the evaluation reports would
make its coverage figures meaningless (docs/evaluation.md keeps the two apart).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio.features

from data_products import grid
from data_products.store import ProductsStore

from pipeline.config import Config, QuantifyConfig
from pipeline.detection.candidates import read_mosaic
from pipeline.publish.inventories import match_inventories
from pipeline.quantify.slumps import SigmaTerms, slump_volume, volume_sigma
from pipeline.quantify.volume import Variogram

#: the coverage a calibrated Gaussian 1-sigma and 2-sigma give
TARGET_1SIGMA, TARGET_2SIGMA = 0.6827, 0.9545


def _variogram(products: Path, cell_id: str) -> Variogram:
    meta = json.loads(ProductsStore(products).part_meta_path(cell_id).read_text())
    v = meta["variogram"]
    return Variogram(nugget=v["nugget_m2"], psill=v["psill_m2"], range_m=v["range_m"],
                     psill_long=v["psill_long_m2"], range_long_m=v["range_long_m"])


def sigma_table(sample: str | Path, products: str | Path, cfg: Config | None = None) -> pd.DataFrame:
    """One row per published slump matched (IoU >= 0.5) to a true slump of ``sample``:
    ``area_m2`` (its pixels with dh), ``n_dems``, ``volume_m3`` (recomputed; equal to the
    published one), ``true_m3``, the raw terms
    ``elevation_m3``, ``outline_m2``, ``step_m3`` and the published ``volume_sigma_m3``.

    The terms are recomputed from the cell's mosaic (its rasters and ``cfg.candidates.halo_m``
    of its neighbours') and the variogram its part recorded; both the volume and the sigma
    must reproduce the published ones, so products made with another configuration than
    ``cfg`` are an error rather than a silently wrong fit."""
    cfg = cfg or Config()
    sample, products = Path(sample), Path(products)
    inv = gpd.read_parquet(ProductsStore(products).inventory).reset_index(drop=True)
    truth = gpd.read_parquet(sample / "truth" / "slumps.parquet").reset_index(drop=True)
    pairs, _ = match_inventories(inv, truth, min_iou=0.5)
    matched = dict(zip(pairs.found_index, pairs.reference_index))
    res = cfg.grid.resolution_m
    rows = []
    for cell_id, group in inv.loc[sorted(matched)].groupby("tile_id"):
        mosaic = read_mosaic(products, grid.parse_cell_id(cell_id), cfg.candidates.halo_m, res)
        vg = _variogram(products, cell_id)
        dh = mosaic.layers["dh"]
        for i, slump in group.iterrows():
            mask = rasterio.features.geometry_mask([slump.geometry], dh.shape, mosaic.transform, invert=True)
            mask &= np.isfinite(dh)
            volume, terms, _ = slump_volume(dh, mosaic.layers["dh_sigma"], mask, slump.geometry.length, res, vg, cfg)
            sigma = volume_sigma(terms, volume, cfg.quantify)
            if not (np.isclose(volume, slump.volume_m3, rtol=1e-5, atol=0.01)
                    and np.isclose(sigma, slump.volume_sigma_m3, rtol=1e-4, atol=0.01)):
                raise ValueError(f"{products}: slump {slump.rts_id} recomputes to {volume:.1f} +- {sigma:.1f} m3, "
                                 f"published {slump.volume_m3:.1f} +- {slump.volume_sigma_m3:.1f} m3: these products "
                                 "were made with another configuration (give it with --config)")
            rows.append({"sample": sample.name, "rts_id": slump.rts_id, "area_m2": float(mask.sum()) * res * res,
                         "n_dems": int(slump.n_dems), "volume_m3": volume,
                         "true_m3": float(truth.volume_m3.iloc[matched[i]]),
                         "volume_sigma_m3": float(slump.volume_sigma_m3), **dataclasses.asdict(terms)})
    return pd.DataFrame(rows, columns=["sample", "rts_id", "area_m2", "n_dems", "volume_m3", "true_m3", "volume_sigma_m3",
                                       "elevation_m3", "outline_m2", "step_m3"])


def sigmas(table: pd.DataFrame, qcfg: QuantifyConfig) -> np.ndarray:
    """The 1-sigma (m3) :func:`volume_sigma` gives each row of a :func:`sigma_table`."""
    terms = SigmaTerms(table.elevation_m3.to_numpy(), table.outline_m2.to_numpy(), table.step_m3.to_numpy())
    return np.asarray(volume_sigma(terms, table.volume_m3.to_numpy(), qcfg), float)


def coverage(table: pd.DataFrame, qcfg: QuantifyConfig) -> tuple[float, float]:
    """Shares of the rows whose true volume lies within 1 and 2 sigma of the measured one."""
    err = np.abs(table.volume_m3.to_numpy() - table.true_m3.to_numpy())
    s = sigmas(table, qcfg)
    return float(np.mean(err <= s)), float(np.mean(err <= 2 * s))


#: the grid :func:`fit_sigma` searches: step scales 0-0.5 by 0.01, model fractions 0-8 % by 0.25 %
STEP_SCALES = np.round(np.arange(0.0, 0.505, 0.01), 3)
MODEL_FRACTIONS = np.round(np.arange(0.0, 0.0805, 0.0025), 4)


def fit_sigma(tables: dict[str, pd.DataFrame], qcfg: QuantifyConfig, step_scales=STEP_SCALES,
              model_fractions=MODEL_FRACTIONS) -> tuple[QuantifyConfig, pd.DataFrame]:
    """The ``step_sigma_scale`` and ``model_sigma_fraction`` (grid search) whose coverage,
    per family (``tables``: family -> :func:`sigma_table` rows), lies nearest the Gaussian
    68.3 % / 95.4 %: the summed squared misses over families and both levels; ties go to
    the smaller sigma (relative to the true volumes). Returns the fitted configuration and the
    table of every grid point; a family without matched slumps is an error."""
    empty = [f for f, t in tables.items() if not len(t)]
    if empty or not tables:
        raise ValueError(f"no matched slumps to fit on for famil{'ies' if len(empty) > 1 else 'y'} "
                         f"{', '.join(empty) or '(none given)'}")
    rows = []
    for k in step_scales:
        for m in model_fractions:
            q = dataclasses.replace(qcfg, step_sigma_scale=float(k), model_sigma_fraction=float(m))
            row = {"step_sigma_scale": float(k), "model_sigma_fraction": float(m), "miss": 0.0, "size": 0.0}
            for f, t in tables.items():
                c1, c2 = coverage(t, q)
                row[f"{f} 1sigma"], row[f"{f} 2sigma"] = c1, c2
                row["miss"] += (c1 - TARGET_1SIGMA) ** 2 + (c2 - TARGET_2SIGMA) ** 2
                row["size"] += float(np.median(sigmas(t, q) / t.true_m3.to_numpy()))
            rows.append(row)
    grid_table = pd.DataFrame(rows).sort_values(["miss", "size"], kind="stable").reset_index(drop=True)
    best = grid_table.iloc[0]
    return dataclasses.replace(qcfg, step_sigma_scale=float(best.step_sigma_scale),
                               model_sigma_fraction=float(best.model_sigma_fraction)), grid_table
