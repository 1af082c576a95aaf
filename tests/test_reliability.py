"""Nothing silently lost, nothing half-written, nothing shared between threads: rasters and
parts carry checksums checked before reuse, a cell is never "ok" without its part, a
second run on one products folder waits (with a timeout), each cell's log holds only its
own lines whatever the threads."""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from pathlib import Path

import geopandas as gpd
import pytest

from data_products import schema, writers
from data_products.store import ProductsStore
from pipeline.config import Config
from pipeline.publish.assemble import assemble
from pipeline.publish.parts import read_part_meta, recorded_part_digest
from pipeline.orchestration.run import LockTimeout, _recorded_digest, cell_log, products_lock, run

from tests.test_orchestration import published_copy


@pytest.fixture()
def published(sample, processed_cells, tmp_path):
    """Two cells through ``rts run`` (DEM stage reused, slump stage run, products published)."""
    out, _ = sample
    cells = list(processed_cells)[:2]
    return out, published_copy(processed_cells, out, tmp_path / "p", cells), cells


def test_cell_rasters_carry_checksums_and_a_truncated_raster_is_not_reused(published):
    _, products, cells = published
    meta_path = ProductsStore(products).cell_meta_path(cells[0])
    meta = json.loads(meta_path.read_text())
    assert set(meta["files"]) >= {"dh.tif", "t1.tif", "t2.tif", "confidence.tif"}
    assert _recorded_digest(meta_path) == meta["inputs_digest"]
    dh = ProductsStore(products).tile_file(cells[0], "dh.tif")
    dh.write_bytes(dh.read_bytes()[: dh.stat().st_size // 2])  # truncated behind a valid cell.json
    assert _recorded_digest(meta_path) is None  # so the next run processes the cell again


def test_a_missing_part_file_is_recomputed_and_the_cell_is_never_ok_without_it(published):
    out, products, cells = published
    n_before = len(gpd.read_parquet(products / schema.INVENTORY))
    victim = ProductsStore(products).part_file(cells[0], "timeseries.parquet")
    victim.unlink()
    meta, problem = read_part_meta(products, cells[0])
    assert meta is None and "timeseries.parquet: missing" in problem
    assert recorded_part_digest(products, cells[0]) is None
    assemble(products, Config())
    tiles = gpd.read_parquet(products / schema.TILES).set_index("tile_id")
    assert tiles.loc[cells[0], "status"] == "failed" and "slump stage" in tiles.loc[cells[0], "error"]
    assert tiles.loc[cells[1], "status"] == "ok"
    # the next run recomputes that part (and only that one) and heals the products
    summary = run(out / "stac" / "catalog.json", products, Config(), tiles=cells, progress=False)
    assert summary["slump_cells"] == 1 and summary["failed"] == 0
    assert victim.exists() and len(gpd.read_parquet(products / schema.INVENTORY)) == n_before
    assert (gpd.read_parquet(products / schema.TILES).status == "ok").all()


def test_an_altered_part_is_recomputed(published):
    _, products, cells = published
    p = ProductsStore(products).part_file(cells[1], "slumps.parquet")
    p.write_bytes(p.read_bytes() + b"\0")
    _, problem = read_part_meta(products, cells[1])
    assert "does not match the recorded" in problem


def test_a_second_run_on_the_same_products_waits_then_gives_up_with_a_clear_message(tmp_path):
    with products_lock(tmp_path):
        assert "pid" in (tmp_path / ".publish.lock").read_text()  # the holder says who it is
        with pytest.raises(LockTimeout, match=r"in use by pid \d+ .*waited"):
            with products_lock(tmp_path, timeout_s=0.3, poll_s=0.05):
                raise AssertionError("the lock was taken twice")
    with products_lock(tmp_path, timeout_s=0):  # released: taken at once
        assert "pid" in (tmp_path / ".publish.lock").read_text()
    assert (tmp_path / ".publish.lock").read_text() == ""  # cleared on release


def test_each_cells_log_holds_only_its_own_lines_whatever_the_threads(tmp_path):
    log = logging.getLogger("pipeline.test_threads")
    level_before = logging.getLogger().level
    barrier = threading.Barrier(2)

    def task(cid: str) -> None:
        with cell_log(tmp_path, cid):
            barrier.wait()  # both handlers attached at once
            for k in range(50):
                log.info("line %d of %s", k, cid)
            barrier.wait()

    threads = [threading.Thread(target=task, args=(c,)) for c in ("cellA", "cellB")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for mine, other in (("cellA", "cellB"), ("cellB", "cellA")):
        text = (tmp_path / "logs" / f"{mine}.log").read_text()
        assert text.count(f"of {mine}") == 50 and other not in text
    assert logging.getLogger().level == level_before  # restored after the last task


def test_writes_are_atomic_and_synced(tmp_path):
    target = tmp_path / "x.json"
    writers.write_json(target, {"a": 1})
    with pytest.raises(ZeroDivisionError):
        with writers.atomic_path(target) as tmp:
            Path(tmp).write_text("half")
            raise ZeroDivisionError("killed mid-write")
    assert json.loads(target.read_text()) == {"a": 1}
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert writers.files_intact(tmp_path, {"x.json": writers.file_sha256(target)}) == ""


@pytest.mark.parametrize("bounds,match", [((float("nan"), 0, 1, 1), "not finite"),
                                          ((0, 0, float("inf"), 1), "not finite"),
                                          ((10, 0, 0, 10), "inverted"),
                                          ((-4e6, -4e6, 4e6, 4e6), "larger than any strip"),
                                          ((7e6, 0, 7.01e6, 1e4), "outside the Arctic")])
def test_a_broken_footprint_leaves_out_that_strip_only_with_its_file_named(sample_strips, bounds, match, caplog):
    import dataclasses

    from pipeline.orchestration.run import footprints
    from pipeline.strips.read import StripFootprintError, strip_bounds

    bad = dataclasses.replace(sample_strips[0], bounds=bounds)
    with pytest.raises(StripFootprintError, match=match):
        strip_bounds(bad)
    with caplog.at_level(logging.WARNING):
        kept = footprints([bad, *sample_strips[1:4]])
    assert [s.dem for s in kept] == [s.dem for s in sample_strips[1:4]]
    assert str(bad.dem) in caplog.text and match in caplog.text


@pytest.mark.parametrize("env,match", [({"RTS_DASHBOARD_TOKEN": ""}, "empty"),
                                       ({"RTS_DASHBOARD_TOKEN": "short"}, "at least 16")])
def test_a_set_but_unusable_token_fails_closed(env, match):
    from dashboard.auth import TokenError, configured_token

    with pytest.raises(TokenError, match=match):
        configured_token(env)


def test_token_sources_and_malformed_secrets():
    from dashboard.auth import TokenError, configured_token

    good = "x" * 24
    assert configured_token({}) is None
    assert configured_token({"RTS_DASHBOARD_TOKEN": good}) == good
    assert configured_token({}, lambda: {"RTS_DASHBOARD_TOKEN": good}) == good
    assert configured_token({}, dict) is None
    with pytest.raises(TokenError, match="must be a string"):
        configured_token({}, lambda: {"RTS_DASHBOARD_TOKEN": 12345678901234567})

    def broken():
        raise ValueError("Expected '=' after a key in a key/value pair (at line 1)")

    with pytest.raises(TokenError, match="cannot be read"):
        configured_token({}, broken)


def test_the_dashboard_refuses_a_network_address_without_a_token(monkeypatch, capsys):
    from pipeline.cli import main

    monkeypatch.delenv("RTS_DASHBOARD_TOKEN", raising=False)
    assert main(["dashboard", "--products", "p", "--address", "0.0.0.0"]) == 2
    assert "RTS_DASHBOARD_TOKEN" in capsys.readouterr().err


def test_loopback_addresses():
    from dashboard.auth import is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.10")


def test_user_text_is_never_rendered_as_markdown():
    from dashboard.state import plain

    out = plain("URL parameter ignored: vmin=[x](http://evil.example) <b>hi</b> *b*")
    assert "[x](" not in out and "<b>" not in out and "*b*" not in out
    assert out.replace("\\", "") == "URL parameter ignored: vmin=[x](http://evil.example) <b>hi</b> *b*"
    assert len(plain("y" * 5000)) <= 300


def test_a_crash_between_the_inventory_and_time_series_renames_is_seen_and_heals(published, monkeypatch):
    from pipeline.publish import assemble as publish
    from pipeline.publish.assemble import verify_published

    out, products, cells = published
    assert verify_published(products) == ""
    # a new part for a cell with slumps (new processing times), then publishing dies right
    # after the inventory was renamed
    tiles = gpd.read_parquet(products / schema.TILES)
    busy = tiles[tiles.n_slumps > 0].tile_id.iloc[0]
    (ProductsStore(products).part_meta_path(busy)).unlink()
    time.sleep(1.0)  # processing times are whole seconds: the recomputed part must differ from the fixture's
    real = writers.write_parquet

    def crash(frame, path, *a, **k):
        if Path(path).name == schema.TIMESERIES:
            raise KeyboardInterrupt("killed")
        return real(frame, path, *a, **k)

    monkeypatch.setattr(publish.writers, "write_parquet", crash)
    with pytest.raises(KeyboardInterrupt):
        run(out / "stac" / "catalog.json", products, Config(), tiles=cells, progress=False)
    monkeypatch.setattr(publish.writers, "write_parquet", real)
    assert "does not match the recorded" in verify_published(products)  # the reader can tell
    assert not list(products.glob(".*.tmp"))
    run(out / "stac" / "catalog.json", products, Config(), tiles=cells, progress=False)
    assert verify_published(products) == ""
    inv = gpd.read_parquet(products / schema.INVENTORY)
    import pandas as pd

    ts = pd.read_parquet(products / schema.TIMESERIES)
    assert set(ts.rts_id) <= set(inv.rts_id) and len(inv)


def test_wrong_token_guesses_are_throttled():
    from dashboard.auth import Throttle

    now = [0.0]
    th = Throttle(max_failures=3, window_s=60, clock=lambda: now[0])
    good = "g" * 20
    assert th.check(good, good) == (True, "")
    for _ in range(3):
        assert th.check("guess", good)[0] is False
    ok, why = th.check(good, good)  # even the right token waits out the window
    assert not ok and "Too many wrong tokens" in why
    now[0] = 61.0
    assert th.check(good, good) == (True, "")


def test_the_products_do_not_depend_on_the_order_cells_run_in(processed_cells, tmp_path):
    import random

    from data_products import grid
    from pipeline.publish.parts import part_digest, slump_cell
    from pipeline.quantify.climate import Climate
    from tests.test_orchestration import _same_products

    cfg = Config()
    cells = list(processed_cells)
    orders = [sorted(cells), random.Random(7).sample(cells, len(cells))]
    assert orders[0] != orders[1]
    folders = []
    for k, order in enumerate(orders):
        products = tmp_path / f"order{k}"
        shutil.copytree(ProductsStore(processed_cells.products).tiles_dir, ProductsStore(products).tiles_dir)
        for cid in order:
            r = slump_cell(products, cid, cfg, None, Climate(None, "none"),
                           part_digest(products, grid.parse_cell_id(cid), cfg, "rules", "none"))
            assert r["status"] == "ok"
        assemble(products, cfg)
        folders.append(products)
    _same_products(*folders)
    a = gpd.read_parquet(folders[0] / schema.INVENTORY).sort_values("rts_id")
    b = gpd.read_parquet(folders[1] / schema.INVENTORY).sort_values("rts_id")
    assert ((a.volume_m3.to_numpy() - b.volume_m3.to_numpy()) == 0).all()


def test_a_malformed_stac_item_costs_that_item_only(sample, tmp_path, caplog):
    from pipeline.strips.sources import discover_strips

    out, _ = sample
    stac = tmp_path / "stac"
    shutil.copytree(out / "stac", stac)
    # the catalog's hrefs to the strips are relative: keep them resolvable
    for p in (out / "stac").parent.iterdir():
        if p.name != "stac" and not (tmp_path / p.name).exists():
            (tmp_path / p.name).symlink_to(p)
    all_items = sorted(stac.rglob("*.json"))
    items = [p for p in all_items if json.loads(p.read_text()).get("type") == "Feature"]
    n = len(discover_strips(str(stac / "catalog.json")))
    assert n == len(items) > 2
    items[0].write_text('{"type": "Feature", "id": ')  # truncated JSON
    with caplog.at_level(logging.WARNING):
        strips = discover_strips(str(stac / "catalog.json"), warn=logging.getLogger("t").warning)
    assert len(strips) == n - 1
    assert items[0].name in caplog.text


def test_a_hung_stac_api_times_out_with_a_message_naming_it(monkeypatch):
    import socket

    from pipeline.strips import sources

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)  # accepts, never answers
    url = f"http://127.0.0.1:{srv.getsockname()[1]}/stac"
    monkeypatch.setattr(sources, "STAC_API_TIMEOUT_S", (1.0, 1.0))
    try:
        with pytest.raises(sources.StripReadError, match="127.0.0.1"):
            sources._discover_stac_api(url, None, None, None, 10, lambda m: None)
    finally:
        srv.close()


def test_a_strip_server_that_never_answers_costs_that_strip_with_its_url_named(monkeypatch):
    import socket

    from pipeline.strips import read

    assert read.GDAL_REMOTE_DEFAULTS["GDAL_HTTP_TIMEOUT"]  # bounded by default
    monkeypatch.setenv("GDAL_HTTP_TIMEOUT", "1")
    monkeypatch.setenv("GDAL_HTTP_CONNECTTIMEOUT", "1")
    monkeypatch.setenv("GDAL_HTTP_MAX_RETRY", "0")
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    url = f"/vsicurl/http://127.0.0.1:{srv.getsockname()[1]}/SETSM_s2s041_WV01_20150708_1020010041D5EE00_1020010043B85600_2m_lsf_seg1_dem.tif"
    try:
        with pytest.raises(read.StripReadError, match="127.0.0.1"):
            read.open_raster(url)
    finally:
        srv.close()


def test_a_broken_secrets_file_fails_closed_even_as_streamlit_reports_it(tmp_path):
    from dashboard.auth import TokenError, configured_token, file_secrets

    class StreamlitSecretNotFoundError(FileNotFoundError):
        """What Streamlit raises for a missing and for a broken secrets file alike."""

    def broken():
        raise StreamlitSecretNotFoundError("Error parsing secrets file at /x/.streamlit/secrets.toml")

    def absent():
        raise StreamlitSecretNotFoundError("No secrets found. Valid paths for a secrets.toml file ...")

    with pytest.raises(TokenError):
        configured_token({}, broken)
    assert configured_token({}, absent) is None
    bad = tmp_path / "secrets.toml"
    bad.write_text('RTS_DASHBOARD_TOKEN = "unterminated')
    with pytest.raises(TokenError):
        configured_token({}, lambda: file_secrets([bad]))
    assert configured_token({}, lambda: file_secrets([tmp_path / "none.toml"])) is None


@pytest.mark.parametrize("units", ["degree_Celsius", "degrees_C", "degrees_K", "K"])
def test_cf_unit_spellings(tmp_path, units):
    import numpy as np
    import xarray as xr

    from pipeline.quantify.climate import open_temperature

    k = 260.0 + 15 * np.cos(2 * np.pi * (np.arange(24) % 12 + 1 - 7.5) / 12)
    vals = k - 273.15 if "C" in units else k
    ds = xr.Dataset({"t2m": (("time", "latitude", "longitude"), np.broadcast_to(vals[:, None, None], (24, 2, 2)),
                             {"units": units})},
                    coords={"time": __import__("pandas").date_range("2015-01-01", periods=24, freq="MS"),
                            "latitude": [68.0, 68.25], "longitude": [-135.0, -134.75]})
    ds.to_netcdf(tmp_path / "t.nc")
    assert float(open_temperature(tmp_path / "t.nc").max()) == pytest.approx(k.max() - 273.15, abs=1e-3)


def test_malformed_checksum_records_never_raise(tmp_path):
    (tmp_path / "a.tif").write_bytes(b"x")
    assert "malformed" in writers.files_intact(tmp_path, ["a.tif"])
    assert "malformed" in writers.files_intact(tmp_path, {"a.tif": 5})
    (ProductsStore(tmp_path).part_dir("c")).mkdir(parents=True)
    (ProductsStore(tmp_path).part_meta_path("c")).write_text("[1, 2]")
    assert read_part_meta(tmp_path, "c") == (None, f"{tmp_path / 'parts' / 'c' / 'part.json'} is not a JSON object")
