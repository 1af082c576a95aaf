"""The published products: contract, accuracy against the sample truth, stability of ids,
atomic writes, and bad climate input.

The slump stage runs on the four processed Peel cells of the session sample (seed 11),
copied into a fresh products folder.
"""

from __future__ import annotations

import json
import shutil

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pystac
import pytest
import rasterio
import shapely
import shapely.affinity
from pystac.validation import validate_dict

from data_products import grid, schema, writers
from data_products.store import ProductsStore
from pipeline.config import Config, QuantifyConfig
from pipeline.detection.detect import detector_id, load_detector
from pipeline.publish.inventories import match_inventories
from pipeline.publish.assemble import assemble
from pipeline.publish.parts import part_digest, slump_cell
from pipeline.quantify.carbon import CarbonDensity
from pipeline.quantify.climate import Climate, load_climate
from data_products.ids import rts_id
from pipeline.quantify.totals import regional_totals
from tests.conftest import validate_geoparquet

DESIGN_INVENTORY = ["rts_id", "tile_id", "region", "geometry", "centroid_lat", "centroid_lon", "area_m2", "volume_m3",
                    "volume_sigma_m3", "mean_dh_m", "max_loss_m", "first_change", "last_change", "n_dems",
                    "volume_rate_m3_yr", "carbon_kg_yr", "r_temperature", "p_temperature", "detector_score",
                    "pipeline_version", "processed_at"]


def _slump_stage(products, cells, cfg, climate_path, order=None):
    """The slump stage as ``rts run`` does it, with the default detector (the shipped Mask
    R-CNN weights, or the rules where none are installed)."""
    climate = load_climate(climate_path, cfg.quantify.summer_months)
    detector = load_detector(cfg.detection)
    results = []
    for cid in order or cells:
        d = part_digest(products, grid.parse_cell_id(cid), cfg, detector_id(cfg.detection), "test")
        results.append(slump_cell(products, cid, cfg, detector, climate, d))
    return results, assemble(products, cfg)


@pytest.fixture(scope="module")
def published(sample, processed_cells, tmp_path_factory):
    out, manifest = sample
    products = tmp_path_factory.mktemp("published")
    shutil.copytree(ProductsStore(processed_cells.products).tiles_dir, ProductsStore(products).tiles_dir)
    cfg = Config()
    cells = list(processed_cells)
    results, summary = _slump_stage(products, cells, cfg, out / "climate" / "era5_t2m_monthly.nc")
    assert all(r["status"] == "ok" for r in results), results
    return products, summary, cells


@pytest.fixture(scope="module")
def matched(sample, published):
    out, _ = sample
    products = published[0]
    inv = gpd.read_parquet(products / schema.INVENTORY)
    truth = gpd.read_parquet(out / "truth" / "slumps.parquet")
    truth = truth[truth.site == "peel"].reset_index(drop=True)
    pairs, summary = match_inventories(inv, truth, 0.5)
    m = pairs.merge(inv.drop(columns="geometry"), left_on="found_index", right_index=True).merge(
        truth[["volume_m3", "temperature_driven"]].rename(columns={"volume_m3": "true_m3"}),
        left_on="reference_index", right_index=True)
    return m, summary, inv


def test_inventory_follows_the_contract(published):
    products, _, _ = published
    path = products / schema.INVENTORY
    geo = validate_geoparquet(path)
    assert geo["version"] == "1.1.0" and geo["columns"]["geometry"]["encoding"] == "WKB"
    assert "covering" in geo["columns"]["geometry"]
    assert geo["columns"]["geometry"]["crs"]["id"]["code"] == 3413
    meta = pq.ParquetFile(path).metadata
    assert meta.row_group(0).column(0).compression == "ZSTD"
    inv = gpd.read_parquet(path)
    assert set(DESIGN_INVENTORY) <= set(inv.columns)
    assert pq.read_schema(path).names == schema.names(schema.INVENTORY_COLUMNS) + ["bbox"]
    got = pq.read_schema(path)
    for c in schema.INVENTORY_COLUMNS:
        if c.name != "geometry":
            assert got.field(c.name).type == c.type, c.name
    assert len(inv) > 3 and inv.rts_id.is_unique
    assert (inv.volume_m3 > 0).all() and (inv.volume_sigma_m3 > 0).all()
    assert (inv.centroid_lat.between(66, 69)).all() and (inv.region == "Northwestern Canada").all()
    assert np.allclose(inv.carbon_kg_yr, inv.volume_rate_m3_yr * 12.0)
    # spatially sorted along the Hilbert curve
    key = inv.geometry.hilbert_distance(total_bounds=writers.HILBERT_BOUNDS, level=16).to_numpy()
    assert (np.diff(key) >= 0).all()
    ts = pd.read_parquet(products / schema.TIMESERIES)
    assert list(ts.columns) == schema.names(schema.TIMESERIES_COLUMNS)
    assert set(ts.rts_id) <= set(inv.rts_id)
    # the yearly losses add up to the slump's volume
    sums = ts.groupby("rts_id").volume_m3.sum()
    assert np.allclose(sums, inv.set_index("rts_id").volume_m3[sums.index], rtol=1e-6)
    tiles = gpd.read_parquet(products / schema.TILES)
    validate_geoparquet(products / schema.TILES)
    assert len(tiles) == 4 and (tiles.status == "ok").all() and tiles.n_slumps.sum() == len(inv)


def test_csv_export_carries_wkt_and_lonlat(published):
    products = published[0]
    csv = pd.read_csv(products / schema.INVENTORY_CSV)
    inv = gpd.read_parquet(products / schema.INVENTORY)
    assert len(csv) == len(inv) and {"centroid_lon", "centroid_lat", "geometry_wkt"} <= set(csv.columns)
    geoms = shapely.from_wkt(csv.geometry_wkt)
    ious = [a.intersection(b).area / a.union(b).area for a, b in zip(geoms, inv.geometry)]
    assert min(ious) > 0.999


def test_stac_collection_is_valid_and_checksums_match(published):
    products = published[0]
    coll = pystac.Collection.from_file(str(products / schema.STAC_COLLECTION))
    validate_dict(coll.to_dict(), extensions=[])  # core schema, offline
    items = list(coll.get_items())
    assert {i.id for i in items} == {"rts_inventory", "rts_timeseries", "tiles"}
    for item in items:
        validate_dict(item.to_dict(), extensions=[])
        assert item.properties["proj:code"] == "EPSG:3413" and len(item.properties["proj:bbox"]) == 4
        data = item.assets["data"]
        path = products / (item.id + ".parquet")
        assert data.get_absolute_href() == str(path.resolve())
        assert data.extra_fields["file:checksum"] == writers.sha256_multihash(path)
        names = [c["name"] for c in data.extra_fields["table:columns"]]
        assert names == [c for c in pq.read_schema(path).names if c != "bbox"]
        assert data.extra_fields["table:row_count"] == pq.ParquetFile(path).metadata.num_rows


def test_data_dictionary_documents_every_column(published):
    products = published[0]
    md = (products / schema.DICTIONARY_MD).read_text()
    js = json.loads((products / schema.DICTIONARY_JSON).read_text())
    for fname in (schema.INVENTORY, schema.TIMESERIES, schema.TILES):
        cols = [c for c in pq.read_schema(products / fname).names if c != "bbox"]
        assert [c["name"] for c in js[fname]] == cols
        for c in cols:
            assert f"`{c}`" in md


def test_volumes_match_the_truth(matched):
    m, summary, _ = matched
    assert summary["matched"] >= 5
    rel = (m.volume_m3 - m.true_m3) / m.true_m3
    assert np.median(np.abs(rel)) <= 0.10
    assert abs(m.volume_m3.sum() / m.true_m3.sum() - 1) <= 0.05
    # the stated 1-sigma covers the true error for a reasonable share (reported in docs)
    cover2 = float((np.abs(m.volume_m3 - m.true_m3) <= 2 * m.volume_sigma_m3).mean())
    assert cover2 >= 0.5


def test_temperature_driven_flag_agrees_with_the_truth(matched):
    m, _, _ = matched
    has_r = m.r_temperature.notna()
    assert has_r.sum() >= 5
    agree = ((m.r_temperature >= 0.5) == m.temperature_driven)[has_r].mean()
    assert agree >= 0.80


def test_rts_id_is_stable_whatever_the_cell_order(published, tmp_path):
    products, _, cells = published
    first = gpd.read_parquet(products / schema.INVENTORY)
    other = tmp_path / "p"
    shutil.copytree(ProductsStore(products).tiles_dir, ProductsStore(other).tiles_dir)
    _slump_stage(other, cells, Config(), None, order=list(reversed(cells)))
    second = gpd.read_parquet(other / schema.INVENTORY)
    assert list(first.rts_id) == list(second.rts_id)
    assert np.allclose(first.volume_m3, second.volume_m3)
    assert all(a.equals(b) for a, b in zip(first.geometry, second.geometry))
    # without a climate file r is empty and the reason is given
    assert second.r_temperature.isna().all() and second.temperature_note.str.contains("no climate file").all()
    # ids are derived from the location
    c = first.geometry.centroid
    assert all(rts_id(x, y) == r for x, y, r in zip(c.x, c.y, first.rts_id))


def test_reassembling_is_idempotent_and_a_failed_write_keeps_the_previous_products(published, monkeypatch):
    products = published[0]
    before = {f: (products / f).read_bytes() for f in (schema.INVENTORY, schema.TIMESERIES, schema.INVENTORY_CSV)}
    assemble(products, Config())
    for f, b in before.items():
        assert (products / f).read_bytes() == b, f"{f} changed on an identical rerun"

    def disk_full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_csv", disk_full)
    with pytest.raises(OSError):
        assemble(products, Config())
    for f, b in before.items():
        assert (products / f).read_bytes() == b
    assert not list(products.glob(".*.tmp"))
    assert len(gpd.read_parquet(products / schema.INVENTORY)) > 0


def test_carbon_density_from_a_raster(tmp_path):
    path = tmp_path / "soc.tif"
    profile = dict(driver="GTiff", width=10, height=10, count=1, dtype="float32", crs="EPSG:4326",
                   transform=rasterio.transform.from_bounds(-140, 60, -130, 70, 10, 10), nodata=-1)
    data = np.full((10, 10), 30.0, np.float32)
    data[:, 5:] = -1  # east half without data
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)
    from pyproj import Transformer

    x, y = Transformer.from_crs("EPSG:4326", grid.CRS, always_xy=True).transform([-137.0, -132.0], [65.0, 65.0])
    dens = CarbonDensity(QuantifyConfig(carbon_raster_path=str(path))).at(np.array(x), np.array(y))
    assert dens.tolist() == [30.0, 12.0]
    with pytest.raises(FileNotFoundError, match="soc_missing.tif"):
        CarbonDensity(QuantifyConfig(carbon_raster_path=str(tmp_path / "soc_missing.tif")))


def test_bad_climate_input_leaves_r_empty_with_a_reason(tmp_path, sample):
    import xarray as xr

    bad = tmp_path / "bad.nc"
    xr.Dataset({"precip": (("time",), np.zeros(3))}, coords={"time": pd.date_range("2015-07-01", periods=3)}
               ).to_netcdf(bad, engine="netcdf4")
    c = load_climate(bad)
    assert c.data is None and "bad.nc" in c.note and "t2m" in c.note
    s, note = c.summer_at(67.0, -135.0)
    assert s.empty and "bad.nc" in note
    good = load_climate(sample[0] / "climate" / "era5_t2m_monthly.nc")
    s, note = good.summer_at(10.0, 20.0)  # far outside the sample's grid
    assert s.empty and "outside the climate grid" in note
    # NaN temperatures: those years drop out; with too few left, r is empty with the count
    da = good.data.copy()
    da[:] = np.nan
    s, note = Climate(da, "").summer_at(67.25, -135.2)
    assert s.empty and "no complete summer" in note


def test_regional_totals_and_the_volume_temperature_slope():
    years = np.arange(2012, 2022)
    temp = 8 + np.sin(years)
    inv = pd.DataFrame({"rts_id": ["a", "b"], "region": ["X", "Y"], "area_m2": [1e4, 2e4], "volume_m3": [1.0, 1.0],
                        "volume_sigma_m3": [0.1, 0.1], "carbon_kg_yr": [1.0, 2.0], "r_temperature": [0.9, np.nan]})
    ts = pd.concat([pd.DataFrame({"rts_id": rid, "year": years, "volume_m3": k * (100 + 50 * temp),
                                  "volume_sigma_m3": 1.0, "summer_t2m_c": temp}) for rid, k in (("a", 1), ("b", 2))])
    yearly, summary = regional_totals(inv, ts)
    s = summary.set_index("region")
    assert s.loc["X", "slope_m3_per_degc"] == pytest.approx(50.0)
    assert s.loc["Y", "slope_m3_per_degc"] == pytest.approx(100.0)
    assert s.loc["Arctic", "slope_m3_per_degc"] == pytest.approx(150.0)
    assert s.loc["Arctic", "share_r_ge"] == 1.0 and s.loc["Arctic", "n_with_r"] == 1
    arctic = yearly[yearly.region == "Arctic"]
    assert len(arctic) == len(years) and (arctic.n_slumps == 2).all()
    assert arctic.volume_sigma_m3.iloc[0] == pytest.approx(np.sqrt(2))


def test_matches_with_a_published_inventory_are_recorded_for_the_slump_pages(published, tmp_path):
    from data_products.catalog import Catalog
    from pipeline.publish.crossref import publish_matches

    products = published[0]
    inv = gpd.read_parquet(products / schema.INVENTORY)
    ref = inv[["rts_id", "geometry"]].rename(columns={"rts_id": "Slump_ID"}).copy()
    ref.loc[0, "geometry"] = shapely.affinity.translate(ref.geometry[0], 500.0, 0.0)  # moved away: no match
    ref_path = tmp_path / "published_utm8.gpkg"
    ref.to_crs("EPSG:32608").to_file(ref_path)  # a UTM inventory, as the Huang et al. files are
    for _ in range(2):  # a rerun replaces the rows for this reference, never duplicates them
        summary = publish_matches(products, ref_path, min_iou=0.5)
    assert summary["matched"] == len(inv) - 1 and summary["new"] == 1 and summary["missed"] == 1
    m = pd.read_parquet(products / schema.MATCHES)
    assert len(m) == len(inv) - 1 and (m.reference == ref_path.name).all()
    assert (m.iou > 0.99).all() and (m.rts_id == m.reference_id).all()
    cat = Catalog(products)
    assert cat.matches(inv.rts_id[1]).reference_id.tolist() == [inv.rts_id[1]]
    assert cat.matches(inv.rts_id[0]).empty


def test_stac_bbox_crosses_the_antimeridian_west_to_east():
    from data_products.stac import _lonlat_bbox

    west, south, east, north = _lonlat_bbox((-2.0e6, 1.9e6, -1.9e6, 2.0e6))  # Chukotka / Bering Strait
    assert west > 170 and east < -170 and 60 < south < north < 70
    assert _lonlat_bbox((-1e5, -1e5, 1e5, 1e5))[3] == 90.0  # the pole inside: all longitudes


def test_every_side_file_follows_its_schema(published):
    """cell.json, part.json, manifest.json, candidates.parquet and the summary CSVs against the
    contract in data_products.schema; a broken cell.json is caught by the same check."""
    import json

    import jsonschema

    from pipeline.detection.evidence import FEATURES

    products = published[0]
    check = jsonschema.Draft202012Validator
    cells = sorted(ProductsStore(products).tiles_dir.glob(f"*/{schema.CELL_META}"))
    parts = sorted(ProductsStore(products).parts_dir.glob(f"*/{schema.PART_META}"))
    assert len(cells) == len(parts) == len(published[2])
    for path, sch in [(p, schema.CELL_META_SCHEMA) for p in cells] + [(p, schema.PART_META_SCHEMA) for p in parts] + [
            (products / schema.MANIFEST, schema.MANIFEST_SCHEMA)]:
        errors = [f"{'/'.join(map(str, e.path))}: {e.message}" for e in check(sch).iter_errors(json.loads(path.read_text()))]
        assert not errors, (path, errors)
    broken = json.loads(cells[0].read_text())
    broken["status"], broken["inputs_digest"] = "fine", "xyz"
    assert len(list(check(schema.CELL_META_SCHEMA).iter_errors(broken))) == 2
    cands = gpd.read_parquet(products / schema.CANDIDATES)
    for name, kind in schema.CANDIDATE_COLUMNS.items():
        assert name in cands.columns, name
        if kind != "geometry":
            assert str(cands[name].dtype) == {"string": "object"}.get(kind, kind), (name, cands[name].dtype)
    assert all(str(cands[f].dtype) == "float64" for f in FEATURES)
    assert cands.crs.to_epsg() == 3413
    assert tuple(pd.read_csv(products / schema.REGION_SUMMARY_CSV).columns) == schema.REGION_SUMMARY_HEADER
    assert tuple(pd.read_csv(products / schema.YEARLY_TOTALS_CSV).columns) == schema.YEARLY_TOTALS_HEADER
