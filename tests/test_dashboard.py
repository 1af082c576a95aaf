"""Every dashboard page's logic with streamlit.testing.v1.AppTest on a small synthetic products
folder: filters change counts, empty results, shareable URL state, bad input refused with a
message and nothing changed (hostile search, bad URL values, path traversal, invalid cell ids,
wrong token), a missing products folder."""

from __future__ import annotations

import sys
import json
import os
import shutil
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from data_products import schema
from data_products.store import ProductsStore
from benchmarks.load_products import generate_products

APP = str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py")
N = 1_500


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    out = tmp_path_factory.mktemp("dash_products")
    info = generate_products(out, N, seed=5, raster_tiles=1)
    return out, info["raster_tiles"][0]


@pytest.fixture(scope="module")
def products(generated):
    return generated[0]


@pytest.fixture(scope="module")
def raster_tile(generated):
    return generated[1]


@pytest.fixture(scope="module")
def inv(products):
    return gpd.read_parquet(products / schema.INVENTORY)


@pytest.fixture()
def app(products, monkeypatch):
    monkeypatch.setenv("RTS_PRODUCTS", str(products))
    monkeypatch.delenv("RTS_DASHBOARD_TOKEN", raising=False)

    def make(page: str | None = None, **query):
        at = AppTest.from_file(APP, default_timeout=60)
        for k, v in query.items():
            at.query_params[k] = v
        if page:
            at.switch_page(page)
        return at.run()
    return make


def metric(at, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def no_exception(at):
    assert not at.exception, [e.value for e in at.exception]


def count(at) -> int:
    return int(metric(at, "Slumps selected").replace(",", ""))


# --------------------------------------------------------------------------- map
def test_map_draws_every_slump_in_a_polar_view(app):
    at = app()
    no_exception(at)
    assert count(at) == N
    deck = json.loads(at.get("deck_gl_json_chart")[0].proto.json)
    assert deck["views"][0]["@@type"] == "OrthographicView" and deck["views"][0]["flipY"] is False
    ids = [layer["id"] for layer in deck["layers"]]
    assert {"sea", "land", "graticule", "aggregate", "mosaic-tiles"} <= set(ids)
    points = sum(len(layer["data"]) for layer in deck["layers"] if layer["id"].startswith("points-"))
    assert points == N  # inline here: AppTest has no static serving
    assert "mapStyle" not in deck or not deck["mapStyle"]  # no base map from the internet


def test_filters_change_the_count_and_the_url(app, inv):
    at = app()
    region = inv.region.value_counts().index[1]
    at.sidebar.multiselect(key="w_regions").select(region).run()
    no_exception(at)
    assert count(at) == (inv.region == region).sum()
    assert at.query_params["region"] == [region] or at.query_params["region"] == region
    at.sidebar.text_input(key="w_vmin").input("50000").run()
    assert count(at) == ((inv.region == region) & (inv.volume_m3 >= 50_000)).sum()
    assert at.query_params["vmin"] in ("50000", ["50000"])


def test_empty_selection_is_handled(app):
    at = app()
    at.sidebar.text_input(key="w_vmin").input("1e15").run()
    no_exception(at)
    assert count(at) == 0
    assert any("No slump matches" in w.value for w in at.warning)


@pytest.mark.parametrize("hostile", ["'; DROP VIEW inventory; --", "x' OR '1'='1", "../../etc/passwd"])
def test_sql_looking_search_is_refused_and_nothing_changes(app, inv, hostile):
    at = app()
    at.sidebar.text_input(key="w_search").input(inv.rts_id.iloc[0][:6]).run()
    before = count(at)
    at.sidebar.text_input(key="w_search").input(hostile).run()
    no_exception(at)
    assert any("search" in e.value for e in at.sidebar.error)
    assert count(at) == before


def test_url_state_is_restored_and_bad_values_ignored(app, inv):
    region = inv.region.value_counts().index[0]
    at = app(region=region, vmin="abc", q="'; DROP", slump=inv.rts_id.iloc[3])
    no_exception(at)
    assert count(at) == (inv.region == region).sum()
    warnings = " ".join(w.value for w in at.sidebar.warning)
    assert "volume" in warnings and "search" in warnings
    assert any(inv.rts_id.iloc[3] in s.value for s in at.subheader)


def test_focus_box_draws_outlines_and_cells(app, inv):
    c = inv.geometry.centroid.iloc[0]
    at = app()
    at.radio(key="w_view").set_value("Focus box").run()
    at.text_input(key="w_focus").input(f"{c.x - 20000:.0f},{c.y - 20000:.0f},{c.x + 20000:.0f},{c.y + 20000:.0f}").run()
    no_exception(at)
    deck = json.loads(at.get("deck_gl_json_chart")[0].proto.json)
    layers = {layer["id"]: layer for layer in deck["layers"]}
    assert {"outlines", "centroids", "cells"} <= set(layers)
    assert any(o["id"] == inv.rts_id.iloc[0] for o in layers["outlines"]["data"])
    at.text_input(key="w_focus").input("1,2,3").run()
    assert any("box" in e.value for e in at.error)
    assert "outlines" in {layer["id"] for layer in json.loads(at.get("deck_gl_json_chart")[0].proto.json)["layers"]}


# --------------------------------------------------------------------------- slump
def test_slump_page_shows_images_charts_and_numbers(app, raster_tile, inv):
    rid = inv[inv.tile_id == raster_tile].sort_values("n_years").rts_id.iloc[-1]
    at = app("views/slump.py", slump=rid)
    no_exception(at)
    charts = at.get("plotly_chart")
    assert [c.key for c in charts] == ["img_dh", "img_t2", "season_map", "yearly", "scatter"]
    specs = [json.loads(c.proto.spec) for c in charts]
    yearly = specs[3]
    assert {t["type"] for t in yearly["data"]} == {"bar", "scatter"} and yearly["layout"]["yaxis2"]["overlaying"] == "y"
    assert specs[0]["data"][0]["type"] == "heatmap" and specs[0]["data"][1]["mode"] == "lines"  # dh with outline
    row = inv.set_index("rts_id").loc[rid]
    assert metric(at, "Volume lost (m³)") == f"{row.volume_m3:,.0f}"


def _z(trace) -> np.ndarray:
    """A heatmap's z from a Plotly spec: a nested list, or a typed array {dtype, bdata, shape}."""
    import base64

    z = trace["z"]
    if isinstance(z, dict):
        a = np.frombuffer(base64.b64decode(z["bdata"]), dtype=z["dtype"])
        shape = z.get("shape")
        if isinstance(shape, str):
            shape = [int(v) for v in shape.split(",")]
        return a.reshape(shape).astype(float)
    return np.array(z, dtype=float)


def test_slump_page_shows_the_scar_season_by_season_and_t2_only_where_the_ground_dropped(app, raster_tile, inv):
    rid = inv[inv.tile_id == raster_tile].sort_values("n_years").rts_id.iloc[-1]
    at = app("views/slump.py", slump=rid)
    specs = {c.key: json.loads(c.proto.spec) for c in at.get("plotly_chart")}
    dh, t2 = _z(specs["img_dh"]["data"][0]), _z(specs["img_t2"]["data"][0])
    assert np.isfinite(t2).any() and not np.isfinite(t2[dh > -1.0]).any()  # no date where nothing dropped
    slider = at.select_slider(key="w_season")
    first, last = slider.options[0], slider.options[-1]
    area = {}
    for year in (first, last):
        at.select_slider(key="w_season").set_value(year).run()
        z = _z(json.loads(next(c for c in at.get("plotly_chart") if c.key == "season_map").proto.spec)["data"][0])
        assert np.nanmax(z) < int(year) + 1  # only what dropped by the end of that season
        area[year] = np.isfinite(z).sum()
    assert 0 < area[first] < area[last] == np.isfinite(t2).sum()


def test_slump_page_lists_the_largest_and_steps_through_the_selection(app, inv):
    at = app("views/slump.py")
    no_exception(at)
    table = at.dataframe[0]  # the only table of the page without a selection
    top = inv.sort_values(["volume_m3", "rts_id"], ascending=[False, True]).rts_id.tolist()
    assert table.value.rts_id.tolist() == top[:25]
    at = app("views/slump.py", slump=top[1])
    next(b for b in at.button if b.label == "Next →").click().run()
    assert at.session_state["slump"] == top[2]
    next(b for b in at.button if b.label == "← Previous").click().run()
    next(b for b in at.button if b.label == "← Previous").click().run()
    assert at.session_state["slump"] == top[0]
    assert next(b for b in at.button if b.label == "← Previous").disabled


def test_slump_page_bad_and_unknown_ids(app):
    at = app("views/slump.py")
    no_exception(at)
    assert any("No slump selected" in i.value for i in at.info)
    at.text_input[0].input("RTS'; DROP--").run()
    assert any("not a slump id" in e.value for e in at.error)
    at.text_input[0].input("RTS_+0000001_+0000001").run()
    assert any("not in this inventory" in w.value for w in at.warning)


# --------------------------------------------------------------------------- summary
def test_summary_totals_follow_filters(app, inv):
    at = app("views/summary.py")
    no_exception(at)
    assert metric(at, "Slumps") == f"{N:,}"
    assert metric(at, "Volume lost (10⁶ m³)") == f"{inv.volume_m3.sum() / 1e6:,.2f}"
    assert metric(at, "Share with r ≥ 0.5") == f"{100 * (inv.r_temperature >= 0.5).mean():.1f} %"
    table = at.dataframe[0].value
    assert table.slumps.sum() == N
    at.sidebar.text_input(key="w_vmin").input("1e15").run()
    no_exception(at)
    assert any("nothing to summarise" in w.value for w in at.warning)


# --------------------------------------------------------------------------- downloads
def test_downloads_offer_selection_and_products_and_guard_paths(app, products):
    at = app("views/downloads.py")
    no_exception(at)
    labels = [b.label for b in at.get("download_button")]
    assert "Selection as GeoParquet" in labels and "Selection as CSV (WKT + lon/lat)" in labels
    assert any("No STAC collection" in i.value for i in at.info)  # absent: said, not an error
    before = sorted(p.name for p in products.iterdir())
    for bad in ["../../../etc/passwd", "/etc/passwd", "tiles/../../x"]:
        at.text_input(key="w_other_file").input(bad).run()
        no_exception(at)
        assert any("outside the products folder" in e.value or "relative" in e.value for e in at.error), bad
    at.text_input(key="w_other_file").input(schema.DICTIONARY_MD).run()
    assert any(b.label == f"Download {schema.DICTIONARY_MD}" for b in at.get("download_button"))
    assert sorted(p.name for p in products.iterdir()) == before


# --------------------------------------------------------------------------- reprocess
def _submit(at):
    """Click 'Submit job' in the same run as the form's pending inputs (forms send values on submit)."""
    next(b for b in at.button if b.label == "Submit job").click()
    return at.run()


def _queue(products):
    pytest.importorskip("data_products.queue")
    from data_products.queue import JobQueue
    return JobQueue(products)


def test_reprocess_refuses_invalid_cells_and_queues_valid_ones(app, products, raster_tile):
    q = _queue(products)
    n0 = len(q.list(limit=1000))
    at = app("views/reprocess.py")
    no_exception(at)
    at.text_area(key="w_rp_cells").input("41_16_1_1_02_05, 99_99_9_9_99_99; DROP TABLE jobs")
    _submit(at)
    assert any("not a cell id" in e.value or "must be within" in e.value for e in at.error)
    assert any("Nothing was queued" in w.value for w in at.warning)
    assert len(q.list(limit=1000)) == n0
    at.text_area(key="w_rp_cells").input(f"{raster_tile}\n41_16_1_1_02_05")
    _submit(at)
    no_exception(at)
    # no worker is alive: the job is queued, and the page says it will wait and how to start one
    assert any("queued" in w.value and "No queue worker" in w.value and "rts jobs work" in w.value for w in at.warning)
    assert not at.success
    jobs = q.list(limit=1000)
    assert len(jobs) == n0 + 1 and sorted(jobs[0].tiles) == sorted([raster_tile, "41_16_1_1_02_05"])


def test_reprocess_says_whether_a_worker_is_alive(app, products):
    q = _queue(products)
    at = app("views/reprocess.py")
    assert any("No queue worker" in w.value for w in at.warning)
    q.announce("node7:4242")
    at = app("views/reprocess.py")
    no_exception(at)
    assert any("node7:4242 (idle" in c.value for c in at.caption)
    assert not any("No queue worker" in w.value for w in at.warning)
    at.text_area(key="w_rp_cells").input("41_16_1_1_04_05")
    _submit(at)
    assert any("A worker is running" in s.value for s in at.success)
    q.announce("node7:4242", stopped=True)


def test_reprocess_box_validation(app, products):
    q = _queue(products)
    n0 = len(q.list(limit=1000))
    at = app("views/reprocess.py")
    at.radio(key="w_rp_mode").set_value("Box (EPSG:3413 m)").run()
    at.text_input(key="w_rp_box").input("1,2,nan,4")
    _submit(at)
    assert at.error and len(q.list(limit=1000)) == n0
    at.text_input(key="w_rp_box").input("-2000000,-1000000,-1000000,0")  # 1,000 km on a side
    _submit(at)
    assert any("500 km" in e.value for e in at.error) and len(q.list(limit=1000)) == n0


def test_reprocess_limits_pending_jobs_and_hides_names_without_the_token(app, products):
    q = _queue(products)
    for i in range(25):
        q.submit(tiles=[f"36_25_2_1_{i + 1:02d}_01"], submitted_by="alice@example.org")
    at = app("views/reprocess.py")
    at.text_area(key="w_rp_cells").input("41_16_1_1_03_05")
    _submit(at)
    assert any("already waiting" in e.value for e in at.error)
    assert all("alice" not in str(df.value) for df in at.dataframe)
    for j in q.list(status="pending", limit=100):
        q.cancel(j.id)


def test_reprocess_requires_the_token_when_configured(app, products, monkeypatch):
    q = _queue(products)
    good = "s3cret-s3cret-s3cret-24c"
    monkeypatch.setenv("RTS_DASHBOARD_TOKEN", good)
    n0 = len(q.list(limit=1000))
    at = app("views/reprocess.py")
    at.text_area(key="w_rp_cells").input("41_16_1_1_03_05")
    at.text_input(key="w_rp_token").input("wrong")
    _submit(at)
    assert any("token" in e.value for e in at.error) and len(q.list(limit=1000)) == n0
    at.text_area(key="w_rp_cells").input("41_16_1_1_03_05")
    at.text_input(key="w_rp_token").input(good)
    _submit(at)
    assert any("queued" in s.value for s in [*at.success, *at.warning]) and len(q.list(limit=1000)) == n0 + 1


def test_a_too_short_token_disables_reprocessing_instead_of_opening_it(app, products, monkeypatch):
    monkeypatch.setenv("RTS_DASHBOARD_TOKEN", "s3cret")
    at = app("views/reprocess.py")
    assert any("Reprocessing is disabled" in e.value and "at least 16" in e.value for e in at.error)
    assert not [b for b in at.button if b.label == "Submit job"]


# --------------------------------------------------------------------------- bad products folder
@pytest.mark.parametrize("page", [None, "views/summary.py", "views/downloads.py", "views/slump.py"])
def test_missing_products_folder_gives_a_clear_message(monkeypatch, tmp_path, page):
    monkeypatch.setenv("RTS_PRODUCTS", str(tmp_path / "nowhere"))
    at = AppTest.from_file(APP, default_timeout=60)
    if page:
        at.switch_page(page)
    at.run()
    no_exception(at)
    assert any("does not exist" in e.value for e in at.error)
    assert not (tmp_path / "nowhere").exists()


def test_products_folder_without_inventory(monkeypatch, tmp_path):
    monkeypatch.setenv("RTS_PRODUCTS", str(tmp_path))
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert any("rts_inventory.parquet" in e.value for e in at.error)
    assert sorted(os.listdir(tmp_path)) == []


# --------------------------------------------------------------------------- cells picked on the map
def test_cells_picked_on_the_map_live_in_the_url_and_go_into_a_reprocessing_request(app, products):
    q = _queue(products)
    n0 = len(q.list(limit=1000))
    picked = ["41_16_1_1_05_05", "41_16_1_1_05_06"]
    at = app("views/map.py", cells=f"{picked[1]},{picked[0]},not-a-cell")
    no_exception(at)
    assert any("2 cells picked for reprocessing" in m.value for m in at.markdown)
    assert any("URL parameter cells" in w.value for w in at.warning)  # the bad token is named, not fatal
    assert at.query_params["cells"] in (",".join(picked), [",".join(picked)])
    at.switch_page("views/reprocess.py").run()
    no_exception(at)
    assert at.radio(key="w_rp_mode").value == "Cells picked on the map"
    _submit(at)
    jobs = q.list(limit=1000)
    assert len(jobs) == n0 + 1 and sorted(jobs[0].tiles) == picked
    at = app("views/reprocess.py")  # nothing picked: the other ways stay the default
    assert at.radio(key="w_rp_mode").value == "Cell ids"


def test_the_map_grid_offers_every_cell_of_a_small_box_and_fills_the_picked_ones():
    import pandas as pd

    from dashboard import mapview
    from data_products import grid

    box = (-2_400_000.0, -600_000.0, -2_392_000.0, -594_000.0)  # 8 km x 6 km: 4 x 3 cells of 2 km
    want = {c.id for c in grid.cells_in_bounds(box)}
    done = sorted(want)[0]
    a, b, c, d = grid.parse_cell_id(done).bounds
    tiles = pd.DataFrame({"tile_id": [done], "status": ["ok"], "n_slumps": [2], "error": [None],
                          "x0": [a], "y0": [b], "x1": [c], "y1": [d]})
    pick = sorted(want)[-1]
    layer = mapview.cell_layer(tiles, box, [pick])
    rows = {r["tile"]: r for r in layer.data}  # inline data outside a server with static serving
    assert set(rows) == want and len(want) == 12
    assert "ok, 2 slumps" in rows[done]["t"] and "not processed" in rows[pick]["t"]
    assert rows[pick]["f"][3] > 0 and all(r["f"][3] == 0 for t, r in rows.items() if t != pick)
    # a large box draws only the processed cells (the grid would be too dense to click)
    big = (-2_500_000.0, -700_000.0, -2_400_000.0, -600_000.0)
    assert [r["tile"] for r in mapview.cell_layer(tiles, big, []).data] == [done]


# --------------------------------------------------------------------------- reference inventories
def test_published_inventories_are_switchable_map_layers(app, products, inv, tmp_path):
    from pipeline.publish.inventories import export_references

    src = tmp_path / "refs" / "team"
    src.mkdir(parents=True)
    inv.iloc[:7][["rts_id", "geometry"]].to_crs(4326).to_file(src / "slumps_2020.gpkg")
    (src / "broken.csv").write_text("a,b\n1,2\n")  # no coordinates: skipped with a message
    said = []
    assert export_references(tmp_path / "refs", products, log=said.append) == {"team__slumps_2020": 7}
    assert len(said) == 1 and "broken.csv" in said[0]
    assert export_references(tmp_path / "refs", products, log=said.append) == {"team__slumps_2020": -1}  # up to date
    at = app("views/map.py")
    no_exception(at)
    ms = at.multiselect(key="w_refs")
    assert ms.options == ["team__slumps_2020"]
    layers = lambda: {ly["id"] for ly in json.loads(at.get("deck_gl_json_chart")[0].proto.json)["layers"]}  # noqa: E731
    assert "ref-team__slumps_2020" not in layers()
    ms.select("team__slumps_2020").run()
    no_exception(at)
    assert "ref-team__slumps_2020" in layers()
    shutil.rmtree(products / "reference")


def test_an_empty_inventory_says_why_with_the_cell_counts():
    from dashboard.state import why_no_slumps

    assert "No work cell has been processed" in why_no_slumps({})
    said = why_no_slumps({"failed": 3})
    assert "3 work cells: 3 failed" in said and "every cell failed" in said
    assert "enough DEMs" in why_no_slumps({"no_data": 2, "too_few_dems": 1})
    said = why_no_slumps({"ok": 4, "failed": 1})
    assert "5 work cells: 1 failed, 4 ok" in said and "4 processed cells held no loss" in said


def test_slump_page_lists_the_strips_that_saw_it(app, products, raster_tile, inv):
    row = inv[inv.tile_id == raster_tile].sort_values("n_years").iloc[-1]
    names = ["SETSM_s2s041_WV02_20110726_10300100A_10300100B_2m_lsf_seg1", "SETSM_WV01_20300424_1020_1020_seg1_2m_v3.0"]
    meta = {"cell_id": raster_tile, "coregistration": [
        {"strip": names[0], "sensor": "WV02", "date": "2000-07-26", "dx_m": 0.5, "dy_m": -0.2, "dz_m": 0.1,
         "used": True, "reason": ""},
        {"strip": names[1], "sensor": "WV01", "date": "2030-04-24", "dx_m": 0.0, "dy_m": 0.0, "dz_m": 0.0, "used": False,
         "reason": "too few stable pixels"}]}
    path = ProductsStore(products).cell_meta_path(raster_tile)
    path.write_text(json.dumps(meta))
    try:
        at = app("views/slump.py", slump=row.rts_id)
        no_exception(at)
        table = next(d for d in at.dataframe if "sensor" in d.value.columns).value
        assert table.sensor.tolist() == ["WV02", "WV01"] and table.when.tolist() == ["before", "after"]
        assert table.used.tolist() == [True, False]
        assert any("1 of 2 strips" in c.value for c in at.caption)
    finally:
        path.unlink()


def test_slump_page_draws_the_matched_outlines_of_published_inventories(app, products, raster_tile, inv, tmp_path):
    import pandas as pd

    from data_products.writers import write_parquet
    from pipeline.publish.inventories import export_references

    row = inv[inv.tile_id == raster_tile].sort_values("n_years").iloc[-1]
    src = tmp_path / "refs"
    src.mkdir()
    ref = inv[inv.rts_id == row.rts_id][["rts_id", "geometry"]].copy()
    ref["geometry"] = ref.geometry.buffer(6.0)
    ref.to_file(src / "field_survey.gpkg")
    export_references(src, products)
    write_parquet(pd.DataFrame({"rts_id": [row.rts_id], "reference": ["field_survey.gpkg"], "reference_row": [0],
                                "reference_id": [None], "iou": [0.9]}), products / schema.MATCHES, schema.MATCHES_COLUMNS)
    try:
        at = app("views/slump.py", slump=row.rts_id)
        no_exception(at)
        spec = json.loads(next(c for c in at.get("plotly_chart") if c.key == "img_dh").proto.spec)
        dashed = [t for t in spec["data"] if t.get("line", {}).get("dash") == "dash"]
        assert [t["name"] for t in dashed] == ["field_survey"]
        assert any("matched outline" in c.value for c in at.caption)
    finally:
        (products / schema.MATCHES).unlink()
        shutil.rmtree(products / "reference")


def test_points_grow_with_volume_and_the_legend_shows_the_sizes():
    from dashboard import mapview

    radii = [mapview.point_radius_px(k, "volume_m3") for k in range(7)]
    assert radii == sorted(radii) and radii[0] >= 1.6 and radii[-1] > 2 * radii[0]
    assert {mapview.point_radius_px(k, "r_temperature") for k in range(7)} == {2.2}  # signed: colour only
    html = mapview.legend_html("volume_m3", "volume (m³)")
    assert f"width:{2.6 * radii[0]:.0f}px" in html and f"width:{2.6 * radii[-1]:.0f}px" in html


def test_a_failed_start_up_preparation_says_so_and_keeps_no_page_waiting(monkeypatch, tmp_path, caplog):
    """dashboard/asgi.py prepares the Map page's default view at start-up; on a folder without
    products it says so, and the flag pages wait on is released."""
    import logging

    from dashboard import asgi, mapview

    monkeypatch.setenv("RTS_PRODUCTS", str(tmp_path / "missing"))
    monkeypatch.setattr(sys, "argv", ["app.py"])
    logger = logging.getLogger("rts.dashboard")
    logger.addHandler(caplog.handler)
    try:
        mapview.PREWARM_IDLE.clear()
        asgi._prewarm()
    finally:
        logger.removeHandler(caplog.handler)
    assert mapview.PREWARM_IDLE.is_set()
    assert any("nothing prepared at start-up" in r.getMessage() for r in caplog.records)
