"""The sample region looks like ArcticDEM, carries the confounders, and is deterministic."""

from __future__ import annotations

import hashlib

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
import shapely
import xarray as xr

from pipeline.evaluation.evaluate import naive_difference
from pipeline.publish.inventories import known_inventories, read_inventory, shape_metrics, shared_data_dir
from pipeline.strips.names import parse_strip_name
from pipeline.strips.sources import discover_strips
from pipeline.synth import generate_sample


def test_strips_are_named_and_encoded_like_arcticdem(sample):
    out, manifest = sample
    dems = sorted((out / "strips").rglob("*_dem.tif"))
    assert 10 * len(manifest["sites"]) <= len(dems) <= 20 * len(manifest["sites"])
    versions = {parse_strip_name(p).version for p in dems}
    assert {"v4.1", "v3", "cross-track"} <= versions
    for p in dems:
        assert p.with_name(p.name.replace("_dem.tif", "_bitmask.tif")).exists()
        assert p.with_name(p.name.replace("_dem.tif", "_matchtag.tif")).exists()
    with rasterio.open(dems[0]) as src:
        assert src.crs.to_epsg() == 3413 and src.dtypes[0] == "float32" and src.nodata == -9999
        assert src.profile["tiled"] and src.compression.name.lower() == "deflate"
        assert src.res == (2.0, 2.0)
        assert src.width > 1000 and src.height > 1000  # larger than a cell


def test_acquisitions_are_mostly_summer_with_some_spring_snow(sample):
    out, _ = sample
    strips = pd.read_csv(out / "truth" / "strips.csv")
    months = pd.to_datetime(strips.date).dt.month
    assert (months.between(6, 9)).mean() >= 0.7
    years = pd.to_datetime(strips.date).dt.year
    assert years.min() <= 2012 and years.max() >= 2021


def test_strips_carry_realistic_errors(sample):
    out, _ = sample
    s = pd.read_csv(out / "truth" / "strips.csv")
    assert s.dx_m.abs().max() > 1.0 and s.dz_m.abs().max() > 1.0  # metres of offset
    assert s.partial.any()  # a straight strip edge through the block
    assert (s.n_clouds > s.n_clouds_flagged).any()  # clouds not all flagged
    # the bitmask flags edges, water and clouds; the matchtag marks interpolation
    bits, unmatched = 0, 0.0
    for p in sorted((out / "strips").rglob("*_bitmask.tif")):
        with rasterio.open(p) as src:
            bits |= int(np.bitwise_or.reduce(np.unique(src.read(1))))
        with rasterio.open(str(p).replace("_bitmask", "_matchtag")) as src:
            unmatched = max(unmatched, float((src.read(1) == 0).mean()))
    assert bits & 0b111 == 0b111
    assert unmatched > 0.0


def test_truth_has_slumps_crossing_cells_and_every_lookalike(sample):
    out, _ = sample
    slumps = gpd.read_parquet(out / "truth" / "slumps.parquet")
    looks = gpd.read_parquet(out / "truth" / "lookalikes.parquet")
    assert len(slumps) >= 6
    assert slumps.crosses_cell_edge.any()
    assert slumps.temperature_driven.any() and (~slumps.temperature_driven).any()
    assert (slumps.initiation_year > 0).any()  # some initiate mid-record
    assert {"drained_lake", "active_layer_detachment", "thermokarst"} <= set(looks.kind)
    yearly = pd.read_csv(out / "truth" / "yearly_losses.csv")
    # yearly losses add up to each slump's volume
    tot = yearly.groupby("slump_id").volume_m3.sum()
    v = slumps.set_index("slump_id").volume_m3
    assert np.allclose(tot.loc[v.index], v, rtol=1e-3)


def test_climate_files_use_the_era5_and_cru_layouts(sample):
    out, _ = sample
    era5 = xr.open_dataset(out / "climate" / "era5_t2m_monthly.nc")
    assert {"valid_time", "latitude", "longitude"} <= set(era5.dims) and era5.t2m.attrs["units"] == "K"
    assert 240 < float(era5.t2m.mean()) < 290
    cru = xr.open_dataset(out / "climate" / "cru_ts_tmp.nc")
    assert {"time", "lat", "lon"} <= set(cru.dims) and cru.tmp.attrs["units"].startswith("degrees")
    # the July-August anomaly at the site is the one that drives the slumps
    an = pd.read_csv(out / "truth" / "anomalies.csv").query("site == 'peel'").set_index("year").ja_anomaly_c
    t = era5.t2m.sel(latitude=67.25, longitude=360 - 135.2, method="nearest").to_series()
    ja = t[t.index.month.isin([7, 8])].groupby(t[t.index.month.isin([7, 8])].index.year).mean()
    years = ja.index.intersection(an.index)
    assert np.corrcoef(ja.loc[years], an.loc[years])[0, 1] > 0.9


def test_stac_catalog_lists_every_strip(sample):
    out, manifest = sample
    strips = discover_strips(out / "stac")
    assert len(strips) == manifest["n_strips"]
    assert all(s.bitmask and s.matchtag and s.bounds for s in strips)


def _digest(folder):
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*_dem.tif")):
        h.update(p.name.encode())
        with rasterio.open(p) as src:
            h.update(src.read(1).tobytes())
    return h.hexdigest()


@pytest.mark.slow  # generates two samples
def test_sample_is_deterministic_by_seed(tmp_path):
    a = generate_sample(tmp_path / "a", seed=5, sites=["yamal"], cells=1, workers=1, log=lambda m: None)
    b = generate_sample(tmp_path / "b", seed=5, sites=["yamal"], cells=1, workers=1, log=lambda m: None)
    generate_sample(tmp_path / "c", seed=6, sites=["yamal"], cells=1, workers=1, log=lambda m: None)
    assert _digest(tmp_path / "a" / "strips") == _digest(tmp_path / "b" / "strips")
    assert _digest(tmp_path / "a" / "strips") != _digest(tmp_path / "c" / "strips")
    assert a["n_slumps"] == b["n_slumps"]


def test_naive_newest_minus_oldest_scores_poorly(sample):
    """Honesty check: without coregistration and a time-series model the sample is hard."""
    out, manifest = sample
    tp = fp = fn = 0
    for site in (s["site"] for s in manifest["sites"]):
        res = naive_difference(out, site)[0.5]
        tp, fp, fn = tp + res["matched"], fp + res["new"], fn + res["missed"]
    f1 = 2 * tp / max(2 * tp + fp + fn, 1)
    assert f1 < 0.5, f1


def test_synthetic_slumps_look_like_real_ones(sample):
    """Area distribution and compactness against published inventories in ../shared/data."""
    if shared_data_dir() is None:
        pytest.skip("../shared/data is absent: cannot compare with real inventories")
    out, _ = sample
    truth = gpd.read_parquet(out / "truth" / "slumps.parquet")
    # inventories outline a whole scar by hand: compare the outline (holes filled, pixel
    # staircase smoothed at one pixel), not the raster-exact active area
    outline = truth.geometry.apply(lambda g: shapely.Polygon(max(getattr(g, "geoms", [g]), key=lambda p: p.area).exterior))
    syn = shape_metrics(gpd.GeoDataFrame(geometry=outline.simplify(2.0), crs=truth.crs))
    real = pd.concat([shape_metrics(read_inventory(p)) for p in known_inventories().values()])
    med_syn, med_real = syn.area_m2.median(), real.area_m2.median()
    assert med_real / 4 < med_syn < med_real * 4, (med_syn, med_real)
    assert real.area_m2.quantile(0.1) / 3 < syn.area_m2.min()
    assert syn.area_m2.max() < real.area_m2.quantile(0.99) * 2
    c_syn, c_real = syn.compactness.median(), real.compactness.median()
    assert abs(c_syn - c_real) < 0.25, (c_syn, c_real)
    e_syn, e_real = syn.elongation.median(), real.elongation.median()
    assert abs(e_syn - e_real) < 0.3, (e_syn, e_real)
