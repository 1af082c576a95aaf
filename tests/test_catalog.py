"""The DuckDB catalog against a small synthetic products folder: filters, bbox, parameter
binding with hostile strings, the path guard, aggregates and exports."""

from __future__ import annotations

import io
import os
import shutil

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import shapely

from data_products import schema
from data_products.store import ProductsStore
from data_products.catalog import (
    SIZE_CLASSES,
    Catalog,
    Filters,
    ProductsError,
    QueryError,
    connect,
    spatial_extension_path,
)
from data_products.grid import TileIdError
from benchmarks.load_products import SYNTHETIC_VERSION, generate_products
from tests.conftest import validate_geoparquet

N = 3_000


@pytest.fixture(scope="module")
def products(tmp_path_factory):
    out = tmp_path_factory.mktemp("catalog_products")
    generate_products(out, N, seed=3, raster_tiles=1)
    return out


@pytest.fixture(scope="module")
def cat(products):
    return Catalog(products)


@pytest.fixture(scope="module")
def inv(products):
    return gpd.read_parquet(products / schema.INVENTORY)


def test_spatial_extension_loads_offline():
    assert spatial_extension_path().name == "spatial.duckdb_extension"
    con = connect()
    assert con.execute("SELECT ST_Area(ST_MakeEnvelope(0, 0, 2, 3))").fetchone()[0] == 6.0


def test_synthetic_products_follow_the_contract(products, inv):
    for fname, cols in schema.TABLES.items():
        got = pq.read_schema(products / fname)
        for c in schema.arrow_schema(cols):
            assert c.name in got.names, (fname, c.name)
            if c.name not in ("geometry", "processed_at"):  # Parquet stores seconds as milliseconds
                assert got.field(c.name).type == c.type, (fname, c.name)
    for fname in (schema.INVENTORY, schema.TILES):
        geo = validate_geoparquet(products / fname)
        assert geo["version"] == "1.1.0"
        assert geo["columns"]["geometry"]["covering"]["bbox"]["xmin"] == ["bbox", "xmin"]
    assert len(inv) == N and inv.rts_id.is_unique
    assert (inv.pipeline_version == SYNTHETIC_VERSION).all()
    assert pq.read_schema(products / schema.INVENTORY).metadata[b"rts:synthetic"]
    assert inv.crs.to_epsg() == 3413 and inv.geometry.is_valid.all()
    assert (inv.area_m2 >= 1_900).all() and (inv.volume_m3 > 0).all()
    # spatially sorted: neighbours in the file are near each other (Hilbert order)
    c = inv.geometry.centroid
    step = np.hypot(np.diff(c.x), np.diff(c.y))
    assert np.median(step) < 20_000
    # roughly a third of the slumps respond to temperature (r >= 0.5), as in the reference study
    share = (inv.r_temperature >= 0.5).mean()
    assert 0.2 < share < 0.5


def test_count_and_filters_match_pandas(cat, inv):
    assert cat.count() == N
    region = inv.region.value_counts().index[0]
    assert cat.count(Filters(regions=(region,))) == (inv.region == region).sum()
    lo, hi = SIZE_CLASSES["medium (1-5 ha)"]
    assert cat.count(Filters(size_classes=("medium (1-5 ha)",))) == ((inv.area_m2 >= lo) & (inv.area_m2 < hi)).sum()
    assert cat.count(Filters(volume=(1e4, 1e5))) == inv.volume_m3.between(1e4, 1e5).sum()
    assert cat.count(Filters(r=(0.5, None))) == (inv.r_temperature >= 0.5).sum()
    assert cat.count(Filters(min_score=0.8)) == (inv.detector_score >= 0.8).sum()
    y0 = pd.to_datetime(inv.first_change).dt.year
    y1 = pd.to_datetime(inv.last_change).dt.year
    assert cat.count(Filters(years=(2015, 2016))) == ((y0 <= 2016) & (y1 >= 2015)).sum()
    rid = inv.rts_id.iloc[17]
    assert cat.count(Filters(search=rid)) == 1
    assert cat.count(Filters(search=rid.lower())) == 1  # case-insensitive


def test_bbox_uses_the_covering_column_and_matches_geometry(cat, inv):
    c = inv.geometry.centroid.iloc[100]
    box = (c.x - 30_000, c.y - 30_000, c.x + 30_000, c.y + 30_000)
    b = inv.geometry.bounds
    expect = ((b.maxx >= box[0]) & (b.minx <= box[2]) & (b.maxy >= box[1]) & (b.miny <= box[3])).sum()
    assert cat.count(Filters(bbox=box)) == expect > 0
    polys = cat.polygons(bbox=box, limit=10_000)
    assert len(polys) == expect
    geoms = shapely.from_wkb([bytes(w) for w in polys.wkb])
    assert shapely.intersects(geoms, shapely.box(*box)).all()
    assert cat.polygons(bbox=box, limit=5).volume_m3.is_monotonic_decreasing
    plan = cat.cursor().execute("EXPLAIN SELECT count(*) FROM inventory WHERE bbox.xmin <= ?", [0.0]).fetchall()
    assert "bbox" in str(plan)
    # the box given as text works too; an empty box is refused
    assert cat.count(Filters(bbox=",".join(str(v) for v in box))) == expect
    with pytest.raises(QueryError):
        cat.count(Filters(bbox=(box[2], box[1], box[0], box[3])))


HOSTILE = ["'; DROP VIEW inventory; --", "RTS' OR '1'='1", "x\" OR 1=1 --", "%", "../../etc/passwd",
           "); SELECT * FROM read_csv('/etc/passwd'", "\x00", "a" * 500]


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_strings_are_refused_or_bound(cat, text):
    """SQL-looking text never changes the query: refused by validation, or bound as a value."""
    with pytest.raises(QueryError):
        cat.count(Filters(search=text))
    # as a region (bound parameter): simply matches nothing, and the views are intact
    if len(text) <= 80:
        assert cat.count(Filters(regions=(text,))) == 0
    with pytest.raises(QueryError):
        cat.slump(text)
    assert cat.count() == N


def test_like_wildcards_are_literal(cat):
    # '-' and '+' are allowed id characters; the SQL wildcards % and _ are refused before the query
    assert cat.count(Filters(search="RTS")) == N
    assert cat.count(Filters(search="RTS__")) == 0  # '_' is escaped: not "any character"
    with pytest.raises(QueryError):
        Filters(search="R%S").validate()


@pytest.mark.parametrize("bad", [
    Filters(years=(2020, 2010)), Filters(volume=("abc", None)), Filters(volume=(float("nan"), None)),
    Filters(r=(-2, None)), Filters(min_score=3), Filters(size_classes=("huge",)), Filters(bbox=(0, 0, 1)),
    Filters(bbox=(9e6, 9e6, 1e7, 1e7)), Filters(volume=(10, 1)),
])
def test_bad_filters_give_clear_errors(cat, bad):
    with pytest.raises(QueryError) as e:
        cat.count(bad)
    assert str(e.value)


def test_path_guard(cat, products, tmp_path):
    assert cat.path(schema.INVENTORY) == products / schema.INVENTORY
    (tmp_path / "secret.txt").write_text("no")
    os.symlink(tmp_path / "secret.txt", products / "link.txt")
    try:
        for rel in ["../secret.txt", "/etc/passwd", "tiles/../../x", "~/x", "link.txt", "", "C:/x", "a\x00b",
                    "tiles"]:
            with pytest.raises(QueryError):
                cat.path(rel)
    finally:
        (products / "link.txt").unlink()
    tid = cat.tiles().query("n_slumps > 0").tile_id.iloc[0]
    with pytest.raises(TileIdError):
        cat.tile_raster("../../etc", "dh")
    with pytest.raises(QueryError):
        cat.tile_raster(tid, "../cell")


def test_missing_or_bad_products_folder(tmp_path):
    with pytest.raises(ProductsError, match="does not exist"):
        Catalog(tmp_path / "nope")
    with pytest.raises(ProductsError, match="rts_inventory.parquet"):
        Catalog(tmp_path)
    (tmp_path / schema.INVENTORY).write_bytes(b"not parquet")
    with pytest.raises(ProductsError, match="not a readable inventory"):
        Catalog(tmp_path)


def test_aggregates_add_up(cat, inv):
    g = cat.grid_aggregate(cell_m=100_000)
    assert g.n.sum() == N
    assert g.volume_m3.sum() == pytest.approx(inv.volume_m3.sum())
    r = cat.region_totals()
    assert r.slumps.sum() == N and set(r.region) == set(inv.region)
    assert r.volume_m3.sum() == pytest.approx(inv.volume_m3.sum())
    t = cat.tile_aggregate()
    assert t.n.sum() == N
    tot = cat.totals()
    assert tot["n"] == N and tot["share_r_ge"] == pytest.approx((inv.r_temperature >= 0.5).mean())
    assert tot["carbon_kg_yr"] == pytest.approx(inv.carbon_kg_yr.sum())


def test_yearly_matches_timeseries(cat, products):
    ts = pd.read_parquet(products / schema.TIMESERIES)
    y = cat.yearly()
    assert y.volume_m3.sum() == pytest.approx(ts.volume_m3.sum())
    assert list(y.year) == sorted(ts.year.unique())
    s = cat.volume_temperature_slope()
    assert s["n"] == len(y) and np.isfinite(s["slope_m3_per_c"])
    rid = ts.rts_id.iloc[0]
    one = cat.timeseries(rid)
    assert len(one) == (ts.rts_id == rid).sum() and one.year.is_monotonic_increasing


def test_slump_and_nearest(cat, inv):
    row = inv.iloc[5]
    got = cat.slump(row.rts_id)
    assert got["volume_m3"] == pytest.approx(row.volume_m3)
    assert shapely.from_wkb(got["wkb"]).equals_exact(row.geometry, 1e-6)
    assert cat.slump("RTS_+0000000_+0000000") is None
    c = row.geometry.centroid
    assert cat.nearest(c.x, c.y) is not None


def test_exports(cat, inv, tmp_path):
    region = inv.region.value_counts().index[0]
    f = Filters(regions=(region,))
    data = cat.export_geoparquet(f)
    path = tmp_path / "sel.parquet"
    path.write_bytes(data)
    validate_geoparquet(path)
    back = gpd.read_parquet(path)
    assert len(back) == (inv.region == region).sum() and back.crs.to_epsg() == 3413
    assert list(back.columns[:4]) == ["rts_id", "tile_id", "region", "geometry"]
    csv = pd.read_csv(io.BytesIO(cat.export_csv(f)))
    assert len(csv) == len(back) and csv.geometry_wkt.str.startswith("POLYGON").all()
    assert {"centroid_lon", "centroid_lat"} <= set(csv.columns)
    empty = cat.export_csv(Filters(search="nomatch"))
    assert pd.read_csv(io.BytesIO(empty)).empty


def test_tiles_and_rasters(cat, products):
    t = cat.tiles()
    assert set(t.status) >= {"ok"} and (t.x1 - t.x0 == 2_000).all()
    tid = next(p.name for p in ProductsStore(products).tiles_dir.iterdir())
    assert cat.tile_raster(tid, "dh").name == "dh.tif"
    assert cat.tile_raster(tid, "curvature") is None  # absent file: None, not an error


def test_only_published_files_are_offered_for_download(cat, products):
    tid = cat.tiles().tile_id.iloc[0]
    for name in ["jobs.sqlite", "logs/x.log", ".publish.lock", ".rts_inventory.parquet.ab12cd34.tmp",
                 "run_summary.json", "parts/x/part.json"]:
        p = products / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("internal")
        with pytest.raises(QueryError, match="not a published product file"):
            cat.path(name)
    assert cat.path(schema.TILES).name == schema.TILES
    if (ProductsStore(products).tile_file(tid, "dh.tif")).exists():
        assert cat.path(f"tiles/{tid}/dh.tif").name == "dh.tif"


def test_glob_characters_in_the_products_path_never_read_another_folder(products, tmp_path):
    # "p[12]" as a glob matches the folders p1 and p2; the catalog must read only "p[12]" itself
    real = tmp_path / "p[12]"
    shutil.copytree(products, real, ignore=shutil.ignore_patterns("tiles"))
    decoy = tmp_path / "p1"
    shutil.copytree(products, decoy, ignore=shutil.ignore_patterns("tiles"))
    inv = gpd.read_parquet(decoy / schema.INVENTORY)
    inv.iloc[:10].to_parquet(decoy / schema.INVENTORY, schema_version="1.1.0", write_covering_bbox=True)
    c = Catalog(real)
    assert c.count() == N


def test_the_temperature_driven_share_uses_the_threshold_the_products_were_made_with(tmp_path):
    import json

    from data_products.catalog import Catalog

    generate_products(tmp_path, 400, seed=3)
    inv = pd.read_parquet(tmp_path / schema.INVENTORY, columns=["r_temperature", "region"])
    assert Catalog(tmp_path).totals()["r_threshold"] == schema.DEFAULT_TEMPERATURE_DRIVEN_R  # nothing recorded
    (tmp_path / schema.MANIFEST).write_text(json.dumps({"files": {}, "config": {"quantify": {"temperature_driven_r": 0.7}}}))
    cat = Catalog(tmp_path)
    tot = cat.totals()
    assert tot["r_threshold"] == 0.7
    assert tot["share_r_ge"] == pytest.approx((inv.r_temperature >= 0.7).mean())
    reg = cat.region_totals().set_index("region")
    want = inv.assign(ge=inv.r_temperature >= 0.7).groupby("region").ge.mean()
    assert np.allclose(reg.loc[want.index, "share_r_ge"], want)
