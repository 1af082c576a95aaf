"""The product contract's own modules: the products folder's layout (data_products.store),
the time base and thaw season (data_products.timebase) and slump ids (data_products.ids),
each defined once and used everywhere."""

from __future__ import annotations

import ast
import datetime as dt
from pathlib import Path

import numpy as np
import pytest

from data_products import ids, schema, timebase
from data_products.store import FAILURE, PARTS_DIR, TILES_DIR, ProductsStore

REPO = Path(__file__).resolve().parents[1]


def test_the_store_names_every_per_cell_path(tmp_path):
    s = ProductsStore(tmp_path)
    cid = "41_16_1_1_02_05"
    assert s.cell_meta_path(cid) == tmp_path / "tiles" / cid / "cell.json"
    assert s.tile_failure_path(cid) == tmp_path / "tiles" / cid / "failure.json"
    assert s.part_meta_path(cid) == tmp_path / "parts" / cid / "part.json"
    assert s.part_failure_path(cid) == tmp_path / "parts" / cid / "failure.json"
    assert s.inventory == tmp_path / schema.INVENTORY and s.manifest == tmp_path / schema.MANIFEST
    assert ProductsStore.tile_key(cid, "dh.tif") == f"tiles/{cid}/dh.tif"


def test_the_store_lists_cells_by_what_their_folders_hold(tmp_path):
    s = ProductsStore(tmp_path)
    for cid in ("41_16_1_1_02_05", "41_16_1_1_03_05"):
        s.tile_dir(cid).mkdir(parents=True)
        s.cell_meta_path(cid).write_text("{}")
    s.tile_file("41_16_1_1_03_05", "dh.tif").write_bytes(b"")
    (s.tiles_dir / "not_a_cell").mkdir()
    (s.tiles_dir / "not_a_cell" / "cell.json").write_text("{}")
    s.part_dir("41_16_1_1_02_05").mkdir(parents=True)
    s.part_meta_path("41_16_1_1_02_05").write_text("{}")
    assert s.live_cells() == ["41_16_1_1_02_05", "41_16_1_1_03_05"]  # the stray folder is ignored
    assert s.raster_cells() == ["41_16_1_1_03_05"]
    assert [c.id for c, _ in s.tile_folders()] == ["41_16_1_1_02_05", "41_16_1_1_03_05"]
    assert s.part_cells() == ["41_16_1_1_02_05"]


def _path_parts(path: Path):
    """String constants used as parts of a path: an operand of ``/``, or a constant (also
    inside an f-string) that starts with a folder name and a slash."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            for side in (node.left, node.right):
                if isinstance(side, ast.Constant) and isinstance(side.value, str):
                    yield side.lineno, side.value
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if node.value.endswith(".json"):
                yield node.lineno, node.value
            elif "/" in node.value and "\n" not in node.value:
                yield node.lineno, node.value.split("/")[0]


@pytest.mark.parametrize("literal", [TILES_DIR, PARTS_DIR, FAILURE, schema.CELL_META, schema.PART_META])
def test_the_layout_is_spelled_out_only_in_the_store(literal):
    """No module of the pipeline, the dashboard or the benchmarks names a per-cell folder or
    side file itself (docstrings aside): they ask data_products.store."""
    offenders = []
    for pkg in ("pipeline", "dashboard", "benchmarks", "data_products"):
        for path in sorted((REPO / pkg).rglob("*.py")):
            if path.name in ("store.py", "schema.py"):
                continue
            for line, value in _path_parts(path):
                if value == literal:
                    offenders.append(f"{path.relative_to(REPO)}:{line}")
    assert not offenders, offenders


def test_days_since_the_epoch_round_trip():
    assert timebase.days_since_epoch("2000-01-01") == 0
    assert timebase.days_since_epoch(dt.date(2016, 7, 1)) == (dt.date(2016, 7, 1) - dt.date(2000, 1, 1)).days
    d = timebase.days_since_epoch(dt.datetime(2021, 8, 15, 23, 59))
    assert timebase.date_of(d) == dt.date(2021, 8, 15) and timebase.date_of(float("nan")) is None
    assert list(timebase.day_of_year([0, 59, 60, 366 + 59])) == [1, 60, 61, 60]  # 29 Feb 2000; 1 Mar 2001
    assert schema.DATE_EPOCH == "2000-01-01"


def test_a_date_belongs_to_the_thaw_season_that_began_before_it():
    d = [timebase.days_since_epoch(x) for x in ("2016-06-19", "2016-06-20", "2016-12-31", "2017-03-01")]
    assert list(timebase.thaw_season_of(np.array(d))) == [2015, 2016, 2016, 2016]


def test_a_season_counts_when_a_quarter_of_it_lies_inside_an_interval():
    a, b = timebase.days_since_epoch("2016-06-01"), timebase.days_since_epoch("2016-10-01")
    assert timebase.season_coverage(a, b) == {2016: 1.0}
    # 20 June - 12 July is 22 of the season's 94 days: under a quarter
    c = timebase.days_since_epoch("2016-07-12")
    assert timebase.seasons_covered(a, c) == [] and timebase.seasons_covered(a, c, 0.2) == [2016]


def test_a_slump_id_names_its_snapped_centroid():
    rid = ids.rts_id(-2245671.4, -712338.0)
    assert rid == "RTS_-0224567_-0071234"
    x, y = ids.position(rid)
    assert abs(x - -2245671.4) <= ids.SNAP_M / 2 and abs(y - -712338.0) <= ids.SNAP_M / 2
    assert ids.rts_id(x, y) == rid  # stable under re-snapping
    with pytest.raises(ValueError, match="not a slump id"):
        ids.position("RTS_12_34")


def test_the_stac_collection_is_self_contained_and_uses_the_extensions(tmp_path):
    """Every href is relative (a moved or served folder still resolves), and the file, table
    and projection fields are those of pystac's extension classes."""
    import json
    import shutil

    import pystac
    from pystac.extensions.file import FileExtension
    from pystac.extensions.projection import ProjectionExtension
    from pystac.extensions.table import TableExtension

    from data_products import stac, writers

    products = tmp_path / "products"
    products.mkdir()
    (products / schema.INVENTORY).write_bytes(b"x" * 10)
    (products / schema.INVENTORY_CSV).write_text("a,b\n")
    stac.write_collection(products, {schema.INVENTORY: {"rows": 3, "csv": schema.INVENTORY_CSV, "title": "inv"}},
                          (-2.0e6, -1.0e6, -1.9e6, -0.9e6), dt.datetime(2012, 7, 1, tzinfo=dt.timezone.utc), None,
                          "test")
    for f in (products / "stac").rglob("*.json"):
        d = json.loads(f.read_text())
        hrefs = [x["href"] for x in d.get("links", [])] + [a["href"] for a in d.get("assets", {}).values()]
        assert hrefs and not any(h.startswith("/") or "://" in h for h in hrefs), (f, hrefs)
    moved = tmp_path / "elsewhere"
    shutil.copytree(products, moved)
    coll = pystac.Collection.from_file(str(moved / schema.STAC_COLLECTION))
    item = next(coll.get_items())
    data = item.assets["data"]
    assert data.get_absolute_href() == str(moved / schema.INVENTORY)
    assert FileExtension.ext(data).checksum == writers.sha256_multihash(moved / schema.INVENTORY)
    assert FileExtension.ext(data).size == 10
    table = TableExtension.ext(data)
    assert table.row_count == 3 and [c.name for c in table.columns] == [c.name for c in schema.INVENTORY_COLUMNS]
    proj = ProjectionExtension.ext(item)
    assert proj.code == schema.CRS and proj.bbox == [-2.0e6, -1.0e6, -1.9e6, -0.9e6]
    assert TableExtension.ext(item).primary_geometry == "geometry"
