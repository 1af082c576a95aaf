"""PGC's real strip index as a source: selection, footprint planning and asset resolution,
checked against counts computed independently here (geopandas overlays of the grid)."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely

from data_products import grid
from data_products.store import ProductsStore
from pipeline.cli import main
from pipeline.config import Config, SelectionConfig
from pipeline.orchestration.plan import CostModel, make_plan
from pipeline.orchestration.run import plan_cells, strips_for
from pipeline.strips.sources import NoStripsError
from pipeline.strips.index import StripIndexError, asset_hrefs, item_url, read_strip_index

INDEX = Path(__file__).resolve().parents[2] / "shared" / "data" / "pgc_strip_index" / \
    "ArcticDEM_Strip_Index_s2s041_excerpt.parquet"
needs_index = pytest.mark.skipif(not INDEX.exists(), reason=f"{INDEX} is absent (../shared/data holds PGC's real index)")


@pytest.fixture(scope="module")
def raw():
    return gpd.read_parquet(INDEX)


@needs_index
def test_every_row_of_the_real_index_becomes_a_strip_with_its_pgc_assets(raw):
    strips = read_strip_index(INDEX)
    assert len(strips) == len(raw) == 63
    s = next(s for s in strips if s.name == raw.dem_id.iloc[0])
    folder = ("https://pgc-opendata-dems.s3.us-west-2.amazonaws.com/arcticdem/strips/s2s041/2m/n66w035/")
    assert s.dem == folder + raw.dem_id.iloc[0] + "_dem.tif"
    assert s.bitmask == folder + raw.dem_id.iloc[0] + "_bitmask.tif"
    assert s.matchtag == folder + raw.dem_id.iloc[0] + "_matchtag.tif"
    assert s.date == raw.acqdate1.iloc[0].date() and s.meta.sensor == raw.sensor1.iloc[0]
    # the footprint, not the box: its area equals the index polygon's, in EPSG:3413
    assert s.footprint.area == pytest.approx(raw.to_crs(3413).geometry.iloc[0].area, rel=1e-9)
    assert sorted(s.date for s in strips) == sorted(raw.acqdate1.dt.date)


def test_stac_browser_links_and_archives_resolve_to_readable_hrefs():
    link = ("https://polargeospatialcenter.github.io/stac-browser/#/external/pgc-opendata-dems.s3.us-west-2."
            "amazonaws.com/arcticdem/strips/s2s041/2m/n66w035/X_2m_lsf_seg1.json")
    assert item_url(link) == ("https://pgc-opendata-dems.s3.us-west-2.amazonaws.com/arcticdem/strips/s2s041/2m/"
                              "n66w035/X_2m_lsf_seg1.json")
    dem, _, _ = asset_hrefs("X_2m_lsf_seg1", link, None, asset_root="http://127.0.0.1:8000")
    assert dem == "http://127.0.0.1:8000/arcticdem/strips/s2s041/2m/n66w035/X_2m_lsf_seg1_dem.tif"
    dem, bitmask, _ = asset_hrefs("X", None, "https://data.pgc.umn.edu/a/X.tar.gz")
    assert dem == "/vsitar//vsicurl/https://data.pgc.umn.edu/a/X.tar.gz/X_dem.tif" and bitmask.endswith("X_bitmask.tif")
    with pytest.raises(StripIndexError, match="neither s3url nor fileurl"):
        asset_hrefs("X", None, None)


@needs_index
def test_selection_keeps_the_rows_the_criteria_name(raw):
    sel = SelectionConfig(start_date="2015-01-01", end_date="2020-12-31", months=(6, 7, 8, 9),
                          sensors=("WV01", "WV02"), in_track_only=True, max_cloud_fraction=0.3,
                          min_valid_fraction=0.5, min_matchtag_density=0.9, max_rmse_m=1.0)
    d = raw.acqdate1
    rmse = raw.rmse.where(~raw.rmse.isin([-1, -9999]))
    expect = raw[(d >= "2015-01-01") & (d < "2021-01-01") & d.dt.month.isin([6, 7, 8, 9])
                 & raw.sensor1.isin(["WV01", "WV02"]) & ~raw.is_xtrack & (raw.cloud_area_percent <= 0.3)
                 & (raw.valid_area_percent >= 0.5) & (raw.valid_area_matchtag_density >= 0.9)
                 & ~(rmse > 1.0)]
    assert 0 < len(expect) < len(raw)
    got = read_strip_index(INDEX, sel)
    assert sorted(s.name for s in got) == sorted(expect.dem_id)
    with pytest.raises(NoStripsError, match="no strip of the index's 63 passes the selection"):
        read_strip_index(INDEX, SelectionConfig(start_date="2030-01-01"))


@needs_index
def test_cells_are_planned_from_the_footprints_not_their_boxes(raw):
    strips = read_strip_index(INDEX)
    cells = plan_cells(strips, 0.25)
    # independently: every grid cell in the index's extent, overlaid with the footprints
    fp = raw.to_crs(3413).rename_geometry("geometry")[["dem_id", "geometry"]].reset_index(drop=True)
    box = grid.cells_in_bounds(tuple(fp.total_bounds))
    g = gpd.GeoDataFrame({"cell": [c.id for c in box]},
                         geometry=[shapely.box(*c.bounds) for c in box], crs=3413)
    ov = gpd.overlay(g, fp, how="intersection", keep_geom_type=True)
    frac = (ov.area / 4e6).groupby(ov["cell"]).max()
    assert sorted(c.id for c in cells) == sorted(frac.index[frac >= 0.25])
    # the boxes would plan more cells than the footprints cover
    boxes = [type(s)(s.dem, s.bitmask, s.matchtag, s.meta, s.bounds) for s in strips]
    assert len(plan_cells(boxes, 0.25)) > len(cells)
    # the strips of one cell are those whose footprint meets it
    c = cells[len(cells) // 2]
    meets = fp[fp.intersects(shapely.box(*c.bounds)) & (fp.intersection(shapely.box(*c.bounds)).area > 0)]
    assert sorted(s.name for s in strips_for(c, strips)) == sorted(meets.dem_id)


@needs_index
def test_rts_plan_json_on_the_real_index(raw, tmp_path, capsys):
    assert main(["plan", "--strips", str(INDEX), "--out", str(tmp_path / "none"), "--json",
                 "--months", "7", "8", "--max-cloud", "0.5"]) == 0
    plan = json.loads(capsys.readouterr().out)
    keep = raw[raw.acqdate1.dt.month.isin([7, 8]) & (raw.cloud_area_percent <= 0.5)]
    assert plan["totals"]["strips"] == len(keep)
    assert plan["totals"]["cells"] == len(plan["cells"]) > 100
    row = plan["cells"][0]
    assert {"cell_id", "bounds", "n_strips", "strips", "strips_by_year", "up_to_date", "core_s"} <= set(row)
    assert row["n_strips"] == len(row["strips"]) == sum(row["strips_by_year"].values())
    assert set(row["strips"]) <= set(keep.dem_id)
    cost = CostModel()
    assert plan["totals"]["core_hours"] == pytest.approx(
        sum(cost.core_seconds(r["n_strips"]) for r in plan["cells"]) / 3600, rel=0.01)


@needs_index
def test_the_index_reads_the_same_as_a_geopackage_and_bad_indexes_are_named(raw, tmp_path):
    gpkg = tmp_path / "ArcticDEM_Strip_Index_s2s041.gpkg"
    raw.to_file(gpkg)
    a = read_strip_index(INDEX)
    b = read_strip_index(gpkg)
    assert [s.dem for s in a] == [s.dem for s in b]
    bad = tmp_path / "no_dem_id.parquet"
    raw.drop(columns=["dem_id"]).to_parquet(bad)
    with pytest.raises(StripIndexError, match=r"no_dem_id.parquet: no column dem_id"):
        read_strip_index(bad)
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"PAR1 not really")
    with pytest.raises(StripIndexError, match=r"junk.parquet: not a readable strip index"):
        read_strip_index(junk)
    assert main(["plan", "--strips", str(junk)]) == 2


def test_selection_values_are_checked():
    with pytest.raises(ValueError, match="fraction 0-1"):
        SelectionConfig(max_cloud_fraction=30)
    with pytest.raises(ValueError, match="ISO date"):
        SelectionConfig(start_date="2020/01/01")
    with pytest.raises(ValueError, match="months must be 1-12"):
        SelectionConfig(months=(13,))


def test_rts_plan_on_a_sample_shows_what_is_up_to_date(sample, processed_cells, tmp_path, capsys):
    import shutil

    out, _ = sample
    products = tmp_path / "p"
    shutil.copytree(ProductsStore(processed_cells.products).tiles_dir, ProductsStore(products).tiles_dir)
    from tests.test_orchestration import _stamp

    _stamp(products, out, list(processed_cells))
    plan = make_plan(out / "stac" / "catalog.json", products, Config())
    up = {r["cell_id"] for r in plan["cells"] if r["up_to_date"]}
    assert up == set(processed_cells)
    assert plan["totals"]["to_process"] == len(plan["cells"]) - len(up) > 0
    assert all(r["core_s"] == 0 for r in plan["cells"] if r["up_to_date"])
    n = np.mean([r["n_strips"] for r in plan["cells"]])
    assert plan["totals"]["mean_strips_per_cell"] == pytest.approx(n, abs=0.05)
