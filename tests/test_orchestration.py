"""Orchestration: a killed run resumes to the same products, bad inputs never stop the
others, readers never see half-written files, the queue runs each job once, and the same
command runs on a separately started Dask scheduler."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio

from data_products import grid, schema
from data_products.store import ProductsStore
from data_products.queue import JobQueue
from pipeline.config import Config
from pipeline.publish.assemble import assemble
from pipeline.publish.parts import part_digest, slump_cell
from pipeline.quantify.climate import Climate
from pipeline.orchestration.run import strips_for, footprints, inputs_digest, run
from pipeline.strips.sources import discover_strips

RTS = [sys.executable, "-m", "pipeline"]


def _stamp(products: Path, sample_dir: Path, cells: list[str]) -> None:
    """Record in each copied cell.json the inputs digest ``rts run`` computes, so the copy
    counts as up to date (as if ``rts run`` had produced it)."""
    strips = footprints(discover_strips(str(sample_dir / "stac" / "catalog.json")))
    for cid in cells:
        path = ProductsStore(products).cell_meta_path(cid)
        meta = json.loads(path.read_text())
        meta["inputs_digest"] = inputs_digest(strips_for(grid.parse_cell_id(cid), strips), Config())
        path.write_text(json.dumps(meta))


def published_copy(processed_cells, sample_dir: Path, products: Path, cells: list[str]) -> Path:
    """``products`` with the conftest DEM stage of ``cells`` copied in (up to date for
    ``rts run``) and then published by ``rts run`` (the slump stage and assembly)."""
    for cid in cells:
        shutil.copytree(ProductsStore(processed_cells.products).tile_dir(cid), ProductsStore(products).tile_dir(cid))
    _stamp(products, sample_dir, cells)
    run(sample_dir / "stac" / "catalog.json", products, Config(), tiles=cells, progress=False)
    return products


@pytest.fixture(scope="module")
def up_to_date(sample, processed_cells, tmp_path_factory):
    """A products folder whose four Peel cells are up to date for ``rts run`` (DEM stage
    skipped), not yet published."""
    out, _ = sample
    products = tmp_path_factory.mktemp("up_to_date")
    shutil.copytree(ProductsStore(processed_cells.products).tiles_dir, ProductsStore(products).tiles_dir)
    _stamp(products, out, list(processed_cells))
    return products


def _inventory(products: Path) -> gpd.GeoDataFrame:
    return gpd.read_parquet(products / schema.INVENTORY).sort_values("rts_id").reset_index(drop=True)


def _same_products(a: Path, b: Path) -> None:
    ia, ib = _inventory(a), _inventory(b)
    assert list(ia.rts_id) == list(ib.rts_id) and ia.rts_id.is_unique
    assert np.allclose(ia.volume_m3, ib.volume_m3) and np.allclose(ia.area_m2, ib.area_m2)
    assert all(x.equals(y) for x, y in zip(ia.geometry, ib.geometry))
    ta = pd.read_parquet(a / schema.TIMESERIES).sort_values(["rts_id", "year"]).reset_index(drop=True)
    tb = pd.read_parquet(b / schema.TIMESERIES).sort_values(["rts_id", "year"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(ta[["rts_id", "year", "volume_m3"]], tb[["rts_id", "year", "volume_m3"]])


def test_a_killed_run_resumes_to_the_products_of_an_uninterrupted_one(sample, processed_cells, tmp_path):
    out, _ = sample
    cells = list(processed_cells)[:2]
    # reference: the uninterrupted result for these two cells (their DEM stage as in conftest)
    ref = published_copy(processed_cells, out, tmp_path / "ref", cells)

    products = tmp_path / "killed"
    cmd = RTS + ["run", "--strips", str(out / "stac" / "catalog.json"), "--out", str(products), "--tiles", *cells]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 600
    while time.time() < deadline and not list(products.glob("tiles/*/cell.json")):
        assert proc.poll() is None, "the run ended before it could be killed"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # half-way: one cell published, the other in flight
    proc.wait()
    assert len(list(products.glob("tiles/*/cell.json"))) == 1
    assert not (products / schema.INVENTORY).exists()

    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "1 up to date" in r.stdout  # the finished cell was not redone
    _same_products(products, ref)
    tiles = gpd.read_parquet(products / schema.TILES)
    assert sorted(tiles.tile_id) == sorted(cells) and (tiles.status == "ok").all()
    assert not list(products.rglob(".*.tmp"))


def _write_strip(folder: Path, name: str, data: np.ndarray, transform, crs="EPSG:3413") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    common = dict(driver="GTiff", width=data.shape[1], height=data.shape[0], count=1, transform=transform)
    if crs:
        common["crs"] = crs
    with rasterio.open(folder / f"{name}_dem.tif", "w", dtype="float32", nodata=-9999, **common) as dst:
        dst.write(data.astype("float32"), 1)
    with rasterio.open(folder / f"{name}_matchtag.tif", "w", dtype="uint8", **common) as dst:
        dst.write(np.ones(data.shape, np.uint8), 1)
    with rasterio.open(folder / f"{name}_bitmask.tif", "w", dtype="uint8", **common) as dst:
        dst.write(np.zeros(data.shape, np.uint8), 1)
    return folder / f"{name}_dem.tif"


def test_bad_inputs_are_listed_and_the_good_cells_published(sample, up_to_date, tmp_path):
    out, manifest = sample
    products = tmp_path / "p"
    shutil.copytree(ProductsStore(up_to_date).tiles_dir, ProductsStore(products).tiles_dir)
    strips = tmp_path / "strips"
    shutil.copytree(out / "strips" / "peel", strips / "peel")
    # a truncated strip and a corrupt one among the good ones
    dems = sorted((strips / "peel").rglob("*_dem.tif"))
    data = dems[0].read_bytes()
    dems[0].write_bytes(data[: len(data) // 3])
    dems[1].write_bytes(b"not a tiff at all" * 100)
    # a strip without usable data over a cell nobody else covers, and one without a CRS
    far = grid.Cell(*np.add((grid.parse_cell_id(manifest["sites"][0]["cells"][0]).ix,
                             grid.parse_cell_id(manifest["sites"][0]["cells"][0]).iy), (5, 5)))
    t = rasterio.transform.from_origin(far.bounds[0], far.bounds[3], 2.0, 2.0)
    _write_strip(strips / "void", "SETSM_s2s041_WV02_20170712_10300100A1B2C300_10300100A1B2C400_2m_lsf_seg1",
                 np.full((1000, 1000), -9999.0), t)
    _write_strip(strips / "nocrs", "SETSM_s2s041_WV03_20180715_104001003C2D3E00_104001003C2D3F00_2m_lsf_seg1",
                 np.full((50, 50), 100.0), t, crs=None)
    summary = run(strips, products, Config(), tiles=[manifest["sites"][0]["cells"][0], far.id], progress=False)
    assert summary["failed"] >= 1
    assert far.id in summary["failures"] and "no strip has valid pixels" in summary["failures"][far.id]
    tiles = gpd.read_parquet(products / schema.TILES).set_index("tile_id")
    assert tiles.loc[far.id, "status"] == "no_data" and tiles.loc[far.id, "error"]
    peel = manifest["sites"][0]["cells"][:1]
    assert tiles.loc[peel[0], "status"] == "ok"
    assert len(gpd.read_parquet(products / schema.INVENTORY)) > 0
    # the reasons are named per cell (truncated / corrupt / no CRS) in the cell records
    warnings = " ".join(" ".join(json.loads((ProductsStore(products).cell_meta_path(c)).read_text())["warnings"])
                        for c in peel if (ProductsStore(products).cell_meta_path(c)).exists())
    assert dems[0].name in warnings or dems[1].name in warnings


def test_readers_never_see_a_half_written_inventory(up_to_date, tmp_path):
    products = tmp_path / "p"
    shutil.copytree(ProductsStore(up_to_date).tiles_dir, ProductsStore(products).tiles_dir)
    cfg = Config()

    for cid in sorted(p.name for p in ProductsStore(products).tiles_dir.iterdir()):
        slump_cell(products, cid, cfg, None, Climate(None, "none"), part_digest(products, grid.parse_cell_id(cid),
                                                                                cfg, "rules", "none"))
    assemble(products, cfg)
    n = len(gpd.read_parquet(products / schema.INVENTORY))
    errors, reads = [], [0]
    done = threading.Event()

    def reader():
        while not done.is_set():
            try:
                assert len(gpd.read_parquet(products / schema.INVENTORY)) == n
                pd.read_parquet(products / schema.TIMESERIES)
                reads[0] += 1
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

    th = threading.Thread(target=reader)
    th.start()
    for _ in range(5):
        assemble(products, cfg)
    done.set()
    th.join()
    assert reads[0] > 5 and not errors


def test_two_workers_on_one_queue_run_each_job_once(sample, up_to_date, tmp_path):
    out, manifest = sample
    products = tmp_path / "p"
    shutil.copytree(ProductsStore(up_to_date).tiles_dir, ProductsStore(products).tiles_dir)
    q = JobQueue(products)
    cells = manifest["sites"][0]["cells"]
    ids = [q.submit(tiles=[c]).id for c in cells]
    assert q.submit(tiles=[cells[0]]).id == ids[0]  # identical pending job deduplicated
    cmd = RTS + ["jobs", "work", "--once", "--products", str(products), "--strips", str(out / "stac" / "catalog.json")]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-1500:] for o in outs]
    jobs = [q.get(i) for i in ids]
    assert all(j.status == "done" and j.attempts == 1 for j in jobs), [(j.status, j.message) for j in jobs]
    ran = sum(o[0].count("job ") for o in outs)
    assert ran == len(ids)
    assert len(gpd.read_parquet(products / schema.INVENTORY)) > 0


@pytest.mark.parametrize("n_workers,n_threads", [(1, 2), (2, 1)])
def test_a_run_on_a_separately_started_dask_scheduler_gives_the_in_process_products(
        sample, up_to_date, tmp_path, n_workers, n_threads):
    """One worker of two threads (``dask worker``'s habit) and two worker processes both
    publish what an in-process run does, every cell "ok" with its part, each cell's log
    holding only its own lines."""
    out, manifest = sample
    cells = manifest["sites"][0]["cells"]
    ref = tmp_path / "ref"
    shutil.copytree(ProductsStore(up_to_date).tiles_dir, ProductsStore(ref).tiles_dir)
    run(out / "stac" / "catalog.json", ref, Config(), tiles=cells, progress=False)
    products = tmp_path / "p"
    shutil.copytree(ProductsStore(up_to_date).tiles_dir, ProductsStore(products).tiles_dir)
    bindir = Path(sys.executable).parent
    sf = tmp_path / "scheduler.json"
    sched = subprocess.Popen([str(bindir / "dask"), "scheduler", "--scheduler-file", str(sf), "--port", "0",
                              "--no-dashboard"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    procs = [sched]
    try:
        deadline = time.time() + 60
        while not sf.exists() and time.time() < deadline:
            time.sleep(0.2)
        address = json.loads(sf.read_text())["address"]
        procs += [subprocess.Popen([str(bindir / "dask"), "worker", "--scheduler-file", str(sf), "--nthreads",
                                    str(n_threads), "--no-dashboard"], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, start_new_session=True,
                                   cwd=Path(__file__).resolve().parents[1]) for _ in range(n_workers)]
        from dask.distributed import Client

        with Client(address, timeout="30s") as c:
            c.wait_for_workers(n_workers, timeout=60)
        r = subprocess.run(RTS + ["run", "--strips", str(out / "stac" / "catalog.json"), "--out", str(products),
                                  "--scheduler", address, "--tiles", *cells], capture_output=True, text=True,
                           timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
        assert f"Dask scheduler {address}" in r.stdout
        summary = json.loads((products / "run_summary.json").read_text())
        assert summary["slump_cells"] == 4 and summary["failed"] == 0 and summary["slumps"] > 0
        _same_products(ref, products)
        tiles = gpd.read_parquet(products / schema.TILES).set_index("tile_id")
        parts = {c: json.loads((ProductsStore(products).part_meta_path(c)).read_text())["n_slumps"] for c in cells}
        assert (tiles.loc[cells, "status"] == "ok").all()
        assert tiles.loc[cells, "n_slumps"].to_dict() == parts
        for c in cells:
            text = (products / "logs" / f"{c}.log").read_text()
            assert f"slump stage of {c}: ok" in text
            assert not [o for o in cells if o != c and o in text], f"{c}.log holds other cells' lines"
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in procs:
            p.wait(timeout=30)


def test_a_cancelled_job_stops_before_publishing(sample, up_to_date, tmp_path):
    from pipeline.orchestration.jobs import work_one

    out, manifest = sample
    products = tmp_path / "p"
    shutil.copytree(ProductsStore(up_to_date).tiles_dir, ProductsStore(products).tiles_dir)
    (ProductsStore(products).tile_dir("backup")).mkdir()  # a stray folder is ignored, not fatal
    (ProductsStore(products).cell_meta_path("backup")).write_text("{}")

    class CancelledWhileRunning(JobQueue):
        def heartbeat(self, job_id, worker, **kw):
            self.cancel(job_id)  # as `rts jobs cancel` from another shell, mid-run
            return super().heartbeat(job_id, worker, **kw)

    q = CancelledWhileRunning(products)
    job = q.submit(tiles=manifest["sites"][0]["cells"])
    assert work_one(q, str(out / "stac" / "catalog.json"), None, Config(), worker="w") == job.id
    done = q.get(job.id)
    assert done.status == "cancelled" and "stopped" in done.message
    assert not (products / schema.INVENTORY).exists()  # nothing half-published
    # the next job over the same cells completes and publishes
    q2 = JobQueue(products)
    q2.submit(tiles=manifest["sites"][0]["cells"])
    jid = work_one(q2, str(out / "stac" / "catalog.json"), None, Config(), worker="w")
    assert q2.get(jid).status == "done" and len(gpd.read_parquet(products / schema.INVENTORY)) > 0


def test_the_dashboard_starts_a_worker_that_runs_submitted_jobs_and_stops_with_it(sample, up_to_date, tmp_path):
    """`rts dashboard --worker-strips` (what `make run` starts): a job queued as the Reprocess
    page queues it is carried out by the worker beside the dashboard, which announces itself
    while alive and is gone, announced stopped, once the dashboard stops."""
    from benchmarks.browser import running_dashboard

    out, manifest = sample
    products = tmp_path / "p"
    shutil.copytree(ProductsStore(up_to_date).tiles_dir, ProductsStore(products).tiles_dir)
    q = JobQueue(products)
    cell = manifest["sites"][0]["cells"][0]
    with running_dashboard(products, args=["--worker-strips", str(out / "stac" / "catalog.json")]):
        job = q.submit(tiles=[cell], submitted_by="test")
        t0 = time.time()
        while q.get(job.id).status not in ("done", "failed") and time.time() - t0 < 300:
            time.sleep(0.5)
        done = q.get(job.id)
        assert done.status == "done", (done.status, done.message)
        assert "0 failed" in done.message and done.worker, done.message
        alive = q.workers(alive_within_s=30)
        assert len(alive) == 1 and alive[0]["job_id"] is None  # idle again
        assert (products / "rts_inventory.parquet").is_file()
    t0 = time.time()
    while q.workers(alive_within_s=30) and time.time() - t0 < 15:
        time.sleep(0.2)
    assert q.workers(alive_within_s=30) == []
