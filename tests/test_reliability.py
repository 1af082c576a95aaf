"""Nothing silently lost, nothing half-written, nothing shared between threads: rasters and
parts carry checksums checked before reuse, a cell is never "ok" without its part, a
second run on one products folder waits (with a timeout), each cell's log holds only its
own lines whatever the threads."""

from __future__ import annotations

import json
import logging
import shutil
import threading
from pathlib import Path

import geopandas as gpd
import pytest

from data_products import schema, writers
from pipeline.config import Config
from pipeline.publish import assemble, read_part_meta, recorded_part_digest
from pipeline.run import LockTimeout, _recorded_digest, cell_log, products_lock, run

from tests.test_orchestration import _stamp


@pytest.fixture()
def published(sample, processed_cells, tmp_path):
    """Two cells through ``rts run`` (DEM stage reused, slump stage run, products published)."""
    out, _ = sample
    cells = list(processed_cells)[:2]
    products = tmp_path / "p"
    for cid in cells:
        shutil.copytree(processed_cells.products / "tiles" / cid, products / "tiles" / cid)
    _stamp(products, out, cells)
    run(out / "stac" / "catalog.json", products, Config(), tiles=cells, progress=False)
    return out, products, cells


def test_cell_rasters_carry_checksums_and_a_truncated_raster_is_not_reused(published):
    _, products, cells = published
    meta_path = products / "tiles" / cells[0] / "cell.json"
    meta = json.loads(meta_path.read_text())
    assert set(meta["files"]) >= {"dh.tif", "t1.tif", "t2.tif", "confidence.tif"}
    assert _recorded_digest(meta_path) == meta["inputs_digest"]
    dh = products / "tiles" / cells[0] / "dh.tif"
    dh.write_bytes(dh.read_bytes()[: dh.stat().st_size // 2])  # truncated behind a valid cell.json
    assert _recorded_digest(meta_path) is None  # so the next run processes the cell again


def test_a_missing_part_file_is_recomputed_and_the_cell_is_never_ok_without_it(published):
    out, products, cells = published
    n_before = len(gpd.read_parquet(products / schema.INVENTORY))
    victim = products / "parts" / cells[0] / "timeseries.parquet"
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
    p = products / "parts" / cells[1] / "slumps.parquet"
    p.write_bytes(p.read_bytes() + b"\0")
    _, problem = read_part_meta(products, cells[1])
    assert "does not match the recorded" in problem


def test_a_second_run_on_the_same_products_waits_then_gives_up_with_a_clear_message(tmp_path):
    with products_lock(tmp_path):
        with pytest.raises(LockTimeout, match=r"in use by pid \d+ .*waited"):
            with products_lock(tmp_path, timeout_s=0.3, poll_s=0.05):
                pass
    with products_lock(tmp_path, timeout_s=0):  # released: taken at once
        pass


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
            1 / 0
    assert json.loads(target.read_text()) == {"a": 1}
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert writers.files_intact(tmp_path, {"x.json": writers.file_sha256(target)}) == ""
