"""Tests for pipeline.publish.inventories against the real published RTS inventories.

The inventories are read from the shared data folder ($RTS_SHARED_DATA, else
<repo root>/../shared/data) and never copied into the repository; the tests that need them skip
when it is absent. Tests on synthetic geometry run everywhere.
"""

from __future__ import annotations

import logging
import math
import re

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from shapely.geometry import Point, Polygon, box

from pipeline.publish import inventories as inv

# Counts found in the files (checked against the README below). The Taymyr shapefiles hold more
# polygons than the README's 75 / 1,404, which are the row counts of the per-RTS CSV tables
# (TP1 RTSIDs 0, 24, 26-30 and TP2 RTSID 0 have no table row).
FILE_COUNTS = {
    "huang2022_banks_island": 262,
    "huang2022_hot_weather_creek": 162,
    "huang2022_willow_river": 197,
    "nitze2021": 2182,  # its 4 invalid polygons are all repairable: none dropped
    "bernhard2022_taymyr_tp1": 82,
    "bernhard2022_taymyr_tp2": 1405,
}
# the README's figure for each inventory, as written there
README_TEXT = {
    "huang2022": "262 / 162 / 197 polygons",
    "nitze2021": "2,182 polygons (4 invalid geometries",
    "taymyr": "75 (TP1) / 1,404 (TP2)",
    "bernhard2022": "1,832 rows",
}
TAYMYR_TABLE_ROWS = {"TP1": 75, "TP2": 1404}
BERNHARD_ROWS = 1832


def require_shared_data():
    root = inv.shared_data_dir()
    if root is None:
        pytest.skip(f"shared RTS inventories not found (set ${inv.SHARED_DATA_ENV} or place them "
                    f"at <repo root>/../shared/data); real-data tests skipped")
    return root


@pytest.fixture(scope="module")
def data_dir():
    return require_shared_data()


_cache: dict = {}


def load(name):
    """Read a known inventory once per test session."""
    if name not in _cache:
        paths = inv.known_inventories()
        if name not in paths:
            pytest.skip(f"inventory {name} not present in the shared data folder")
        _cache[name] = inv.read_inventory(paths[name])
    return _cache[name].copy()


# ---------------------------------------------------------------------------------------------
# locating the data / skipping


def test_skip_when_shared_data_absent(monkeypatch, tmp_path):
    monkeypatch.setenv(inv.SHARED_DATA_ENV, str(tmp_path / "nowhere"))
    assert inv.shared_data_dir() is None
    assert inv.known_inventories() == {}
    with pytest.raises(pytest.skip.Exception, match="shared RTS inventories not found"):
        require_shared_data()


def test_env_var_selects_folder(monkeypatch, tmp_path):
    (tmp_path / "inventories").mkdir()
    monkeypatch.setenv(inv.SHARED_DATA_ENV, str(tmp_path))
    assert inv.shared_data_dir() == tmp_path.resolve()
    assert inv.known_inventories() == {}


# ---------------------------------------------------------------------------------------------
# reading the real inventories


def test_readme_counts_match_files(data_dir):
    readme = (data_dir / "README.md").read_text()
    for text in README_TEXT.values():
        assert text in readme, f"README no longer says {text!r}"
    names = inv.known_inventories()
    assert set(names) == set(FILE_COUNTS), f"missing: {set(FILE_COUNTS) - set(names)}"
    # Huang and Nitze: file counts equal the README's
    nums = [int(n) for n in re.findall(r"\d+", README_TEXT["huang2022"])]
    assert nums == [FILE_COUNTS["huang2022_banks_island"], FILE_COUNTS["huang2022_hot_weather_creek"],
                    FILE_COUNTS["huang2022_willow_river"]]
    assert int(README_TEXT["nitze2021"].split()[0].replace(",", "")) == FILE_COUNTS["nitze2021"]
    # Taymyr: the README's counts are the CSV tables' rows; every table id is a shapefile polygon
    for tp, n_rows in TAYMYR_TABLE_ROWS.items():
        table = pd.read_csv(data_dir / f"inventories/bernhard2022_taymyr/RTS_vol_area_changes_{tp}.csv",
                            skipinitialspace=True)
        assert len(table) == n_rows
        shp = load(f"bernhard2022_taymyr_{tp.lower()}")
        assert set(table["RTS-ID"]) <= set(shp["RTSID"])
        assert len(shp) == FILE_COUNTS[f"bernhard2022_taymyr_{tp.lower()}"] > n_rows


@pytest.mark.parametrize("name", sorted(FILE_COUNTS))
def test_polygon_inventory_reads(data_dir, name):
    gdf = load(name)
    assert len(gdf) == FILE_COUNTS[name]
    assert gdf.crs.to_epsg() == 3413
    assert gdf.is_valid.all()
    assert set(gdf.geom_type) <= {"Polygon", "MultiPolygon"}
    assert not gdf.is_empty.any()
    assert not gdf.has_z.any()
    assert (gdf["source"] == inv.known_inventories()[name].stem).all()
    # plausible EPSG:3413 coordinates of Arctic points
    x0, y0, x1, y1 = gdf.total_bounds
    assert -4e6 < x0 < x1 < 4e6 and -4e6 < y0 < y1 < 4e6


def test_nitze_invalid_geometries_repaired(data_dir):
    path = inv.known_inventories()["nitze2021"]
    raw = gpd.read_file(path)
    assert (~raw.is_valid).sum() == 4
    gdf = load("nitze2021")
    assert gdf.is_valid.all() and len(gdf) == len(raw)
    # repair changes the areas only negligibly
    bad = raw.index[~raw.is_valid]
    a_raw = raw.loc[bad].to_crs(inv.CRS).area
    a_fix = gdf.loc[bad].area
    assert np.allclose(a_fix, a_raw, rtol=0.01)


def test_bernhard_csv_points(data_dir):
    gdf = inv.read_inventory(data_dir / inv.BERNHARD2022_CSV)
    assert len(gdf) == BERNHARD_ROWS
    assert gdf.crs.to_epsg() == 3413
    assert set(gdf.geom_type) == {"Point"}
    for col in ["Area", "RTSID", "location_center_lat", "location_center_lon", "change_vol_year",
                "change_area_year", "dem_avg_slope", "dem_aspect", "dem_elevation", "location"]:
        assert col in gdf.columns
    assert not any(c.startswith("Unnamed") for c in gdf.columns)
    assert set(gdf["location"]) == {"hillslope", "lakeshore"}
    assert gdf["location_center_lat"].between(60, 85).all()
    assert (gdf["source"] == "RTS_data_Inventory").all()
    back = gdf.to_crs(4326)
    assert np.allclose(back.geometry.y, gdf["location_center_lat"], atol=1e-7)


@pytest.mark.parametrize("stem", ["RTS_SOC_changes_TP1", "RTS_vol_area_changes_TP2"])
def test_taymyr_csv_has_no_coordinates(data_dir, stem):
    path = data_dir / "inventories/bernhard2022_taymyr" / f"{stem}.csv"
    with pytest.raises(ValueError, match="has no coordinates") as err:
        inv.read_inventory(path)
    assert str(path) in str(err.value)


# ---------------------------------------------------------------------------------------------
# errors and repair on synthetic files


def test_missing_file_named(tmp_path):
    path = tmp_path / "no_such_inventory.shp"
    with pytest.raises(FileNotFoundError, match="no_such_inventory.shp"):
        inv.read_inventory(path)


def test_unreadable_file_named(tmp_path):
    path = tmp_path / "garbage.shp"
    path.write_bytes(b"this is not a shapefile" * 10)
    with pytest.raises(ValueError, match="garbage.shp"):
        inv.read_inventory(path)


def test_file_without_crs_named(tmp_path):
    path = tmp_path / "nocrs.gpkg"
    with pytest.warns(UserWarning, match="crs"):
        gpd.GeoDataFrame({"a": [1]}, geometry=[box(0, 0, 10, 10)]).to_file(path)
    with pytest.raises(ValueError, match=r"nocrs\.gpkg.*no CRS"):
        inv.read_inventory(path)


def test_repair_and_drop_with_warning(tmp_path, caplog):
    bowtie = Polygon([(0, 0), (100, 100), (100, 0), (0, 100)])        # repairable
    collapsed = Polygon([(0, 0), (100, 100), (50, 50), (0, 0)])       # no area: unrepairable
    good = box(500_000, 7_700_000, 500_100, 7_700_050)
    path = tmp_path / "mixed.gpkg"
    gpd.GeoDataFrame({"k": [0, 1, 2, 3]},
                     geometry=[shapely.affinity.translate(bowtie, 500_000, 7_700_000), collapsed,
                               good, Polygon()],
                     crs="EPSG:32610").to_file(path)
    with caplog.at_level(logging.WARNING, logger="pipeline.publish.inventories"):
        gdf = inv.read_inventory(path)
    assert list(gdf["k"]) == [0, 2]
    assert list(gdf.index) == [0, 2]
    assert gdf.is_valid.all() and set(gdf.geom_type) <= {"Polygon", "MultiPolygon"}
    assert "dropped 2 of 4" in caplog.text and "mixed.gpkg" in caplog.text


# ---------------------------------------------------------------------------------------------
# shape metrics


def _at_70n(geoms_m):
    """Place shapes given in metres around a point at 70 deg N (true scale of EPSG:3413)."""
    cx, cy = gpd.GeoSeries([Point(-120, 70)], crs=4326).to_crs(inv.CRS).iloc[0].coords[0]
    return gpd.GeoDataFrame(geometry=[shapely.affinity.translate(g, cx, cy) for g in geoms_m],
                            crs=inv.CRS)


def test_shape_metrics_known_shapes():
    gdf = _at_70n([box(0, 0, 100, 100), box(0, 0, 200, 100), Point(0, 0).buffer(100, 256)])
    m = inv.shape_metrics(gdf)
    assert np.allclose(m["area_m2"], [1e4, 2e4, math.pi * 1e4], rtol=0.005)
    assert np.allclose(m["perimeter_m"], [400, 600, 2 * math.pi * 100], rtol=0.005)
    assert np.allclose(m["compactness"], [math.pi / 4, 4 * math.pi * 2 / 36, 1.0], atol=0.001)
    assert np.allclose(m["elongation"][:2], [0.0, 0.5], atol=1e-9)
    assert m["elongation"].iloc[2] < 0.01
    assert np.allclose(m["aspect_ratio"][:2], [1.0, 2.0])
    # unaffected by the input CRS
    m2 = inv.shape_metrics(gdf.to_crs(32611))
    assert np.allclose(m2["area_m2"], m["area_m2"], rtol=1e-4)
    assert np.allclose(m2["compactness"], m["compactness"], rtol=1e-3)


def test_shape_metrics_equal_area_away_from_70n():
    """At 78 deg N EPSG:3413 understates areas by ~3 %; area_m2 and perimeter_m are true."""
    utm = gpd.GeoDataFrame(geometry=[box(500_000, 8_660_000, 500_200, 8_660_200)], crs=32633)
    m = inv.shape_metrics(utm)
    k_utm = 0.9996  # UTM scale on the central meridian: 200 grid metres are 200 / k true metres
    assert m["area_m2"].iloc[0] == pytest.approx(4e4 / k_utm**2, rel=2e-4)
    assert m["perimeter_m"].iloc[0] == pytest.approx(800 / k_utm, rel=2e-4)
    assert utm.to_crs(inv.CRS).area.iloc[0] < 0.98 * m["area_m2"].iloc[0]


@pytest.mark.parametrize("name", sorted(FILE_COUNTS))
def test_real_shape_statistics_plausible(data_dir, name):
    s = inv.summarize_shapes(load(name))
    assert s["n"] == FILE_COUNTS[name]
    # measured medians: area 3.6e3-1.2e4 m2, compactness 0.47-0.73, elongation 0.37-0.56
    assert 1e3 < s["area_m2_median"] < 1e5
    assert 0.2 < s["compactness_median"] < 0.9
    assert 0.2 < s["elongation_median"] < 0.7
    assert 500 < s["area_m2_q10"] < s["area_m2_q25"] < s["area_m2_median"] < s["area_m2_q75"] \
        < s["area_m2_q90"] < 2e5


# ---------------------------------------------------------------------------------------------
# matching


def _lens_iou(f):
    """IoU of two equal disks whose centres are f diameters apart."""
    inter = (2 * math.acos(f) - 2 * f * math.sqrt(1 - f * f)) / math.pi  # fraction of a disk
    return inter / (2 - inter)


@pytest.mark.parametrize("name", sorted(FILE_COUNTS))
def test_match_self_after_reprojection(data_dir, name):
    gdf = load(name)
    other = gdf.to_crs(4326) if name.startswith(("nitze", "bernhard")) else \
        gdf.to_crs(gdf.estimate_utm_crs())
    pairs, s = inv.match_inventories(gdf, other)
    n = len(gdf)
    assert s["matched"] == n and s["new"] == 0 and s["missed"] == 0
    assert s["mean_iou"] > 0.99
    assert s["precision"] == s["recall"] == s["f1"] == 1.0
    assert list(pairs.columns) == ["found_index", "reference_index", "iou"]
    # one-to-one
    assert pairs["found_index"].is_unique and pairs["reference_index"].is_unique


def test_match_shifted_disks_analytic():
    rng = np.random.default_rng(0)
    centres = np.stack([np.arange(50) * 5000.0, rng.uniform(0, 1000, 50)], axis=1)
    radii = rng.uniform(20, 200, 50)
    disks = _at_70n([Point(c).buffer(r, 128) for c, r in zip(centres, radii)])
    f = 0.3
    shifted = disks.copy()
    shifted.geometry = [shapely.affinity.translate(g, f * 2 * r, 0) for g, r in zip(disks.geometry, radii)]
    pairs, s = inv.match_inventories(shifted, disks)
    assert s["matched"] == 50
    assert (pairs["found_index"] == pairs["reference_index"]).all()
    assert s["mean_iou"] == pytest.approx(_lens_iou(f), abs=0.003)  # 0.453


# not nitze2021: a multi-temporal training set in which most slumps are delineated again in
# several images (2,240 pairs of its polygons overlap with IoU > 0.9), so a shifted polygon is
# often matched to a near-identical copy of itself rather than to its own row.
@pytest.mark.parametrize("name", ["huang2022_banks_island", "huang2022_hot_weather_creek",
                                  "bernhard2022_taymyr_tp2"])
def test_match_shifted_real(data_dir, name):
    gdf = load(name)
    f = 0.3
    d = 2 * np.sqrt(gdf.area.to_numpy() / math.pi)  # equivalent-circle diameter (EPSG:3413 m)
    shifted = gdf.copy()
    shifted.geometry = [shapely.affinity.translate(g, f * di, 0) for g, di in zip(gdf.geometry, d)]
    # direct IoU of each polygon with its own shifted copy
    inter = shapely.area(shapely.intersection(gdf.geometry.values, shifted.geometry.values))
    direct = inter / (gdf.area.to_numpy() + shifted.area.to_numpy() - inter)
    pairs, s = inv.match_inventories(shifted, gdf.to_crs(4326))
    own = pairs[pairs["found_index"] == pairs["reference_index"]]
    assert len(own) >= 0.95 * len(gdf)
    assert np.allclose(own["iou"], direct[gdf.index.get_indexer(own["found_index"])], atol=1e-3)
    expected = direct[direct >= 0.1].mean()
    assert s["mean_iou"] == pytest.approx(expected, abs=0.02)
    # real outlines are less compact than disks, so the same shift costs a little more overlap
    assert 0.3 < s["mean_iou"] < _lens_iou(f) + 0.05


@pytest.mark.parametrize("name", ["huang2022_willow_river", "bernhard2022_taymyr_tp2"])
def test_match_dropped_reference(data_dir, name):
    gdf = load(name)
    drop = gdf.sample(frac=0.1, random_state=1).index
    k = len(drop)
    pairs, s = inv.match_inventories(gdf, gdf.drop(drop))
    assert s["new"] == k and s["missed"] == 0 and s["matched"] == len(gdf) - k
    assert set(gdf.index) - set(pairs["found_index"]) == set(drop)
    assert s["precision"] == pytest.approx(1 - k / len(gdf)) and s["recall"] == 1.0
    pairs, s = inv.match_inventories(gdf.drop(drop), gdf)
    assert s["missed"] == k and s["new"] == 0


def test_match_bernhard_points_in_own_buffers(data_dir):
    pts = inv.read_inventory(data_dir / inv.BERNHARD2022_CSV)
    buffers = pts.copy()
    buffers.geometry = pts.buffer(50)
    pairs, s = inv.match_inventories(buffers, pts)
    assert s["reference_kind"] == "point"
    assert s["matched"] == len(pts) == BERNHARD_ROWS
    assert (pairs["found_index"] == pairs["reference_index"]).all()
    assert pairs["iou"].isna().all() and math.isnan(s["mean_iou"])
    # a point outside every polygon is missed
    far = pts.iloc[:3].copy()
    far.geometry = far.translate(10_000, 0)
    _, s2 = inv.match_inventories(buffers.iloc[:3], far)
    assert s2["matched"] == 0 and s2["missed"] == 3 and s2["new"] == 3


def test_match_min_iou_and_one_to_one():
    a = _at_70n([box(0, 0, 100, 100)])
    b = _at_70n([box(5, 0, 105, 100), box(80, 0, 180, 100)])  # IoU 0.905 and 0.111
    pairs, s = inv.match_inventories(a, b)
    assert s["matched"] == 1 and pairs["reference_index"].tolist() == [0]
    assert s["missed"] == 1
    _, s = inv.match_inventories(_at_70n([box(80, 0, 180, 100)]), a, min_iou=0.2)
    assert s["matched"] == 0


# ---------------------------------------------------------------------------------------------
# rts crossref: a known perturbation of a published inventory, through the files and the CLI


@pytest.mark.parametrize("name", ["huang2022_banks_island", "bernhard2022_taymyr_tp2"])
def test_crossref_known_perturbation_through_files(data_dir, tmp_path, name, capsys):
    """The reference file's own polygons, reprojected to WGS 84 and written as GeoPackage, with
    k polygons moved by two equivalent diameters (IoU 0: each is one new and one missed), m
    dropped (missed) and n far-away polygons added (new)."""
    from pipeline.cli import main

    ref_path = inv.known_inventories()[name]
    ref = inv.read_inventory(ref_path)
    rng = np.random.default_rng(4)
    moved = rng.choice(ref.index, 10, replace=False)
    dropped = rng.choice(ref.index.difference(moved), 7, replace=False)
    mine = ref.drop(dropped).copy()
    d = 2 * np.sqrt(mine.loc[moved].area.to_numpy() / math.pi)
    mine.loc[moved, "geometry"] = [shapely.affinity.translate(g, 2 * di + 10, 0)
                                   for g, di in zip(mine.loc[moved].geometry, d)]
    far = gpd.GeoDataFrame(geometry=[box(3e6 + 500 * i, 3e6, 3e6 + 500 * i + 100, 3e6 + 100) for i in range(5)],
                           crs=inv.CRS)
    mine = pd.concat([mine[["geometry"]], far], ignore_index=True).set_crs(inv.CRS, allow_override=True)
    path = tmp_path / "mine.gpkg"
    mine.to_crs(4326).to_file(path)
    # the same counts from the function and from the command line
    _, s = inv.match_inventories(inv.read_inventory(path), ref, min_iou=0.5)
    n = len(ref)
    assert s["matched"] == n - 10 - 7
    assert s["new"] == 10 + 5 and s["missed"] == 10 + 7
    assert s["mean_iou"] > 0.99
    out_csv = tmp_path / "crossref.csv"
    assert main(["crossref", "--inventory", str(path), "--reference", str(ref_path), "--min-iou", "0.5",
                 "--out", str(out_csv)]) == 0
    printed = capsys.readouterr().out
    assert f"matched {n - 17}, new 15, missed 17" in printed
    rows = pd.read_csv(out_csv)
    assert rows.status.value_counts().to_dict() == {"matched": n - 17, "new": 15, "missed": 17}
    missed = set(rows.loc[rows.status == "missed", "reference_index"].astype(int))
    assert missed == set(moved) | set(dropped)
