"""``rts run``: plan the cells the strips cover, run the DEM stage on each, then the slump
stage (candidates, detection, quantification) on each, then publish the product files.

Cells are independent work units; each is processed in its own process (``workers``)
and published atomically under ``PRODUCTS/tiles/<cell>/`` and ``PRODUCTS/parts/<cell>/``. A cell whose ``cell.json``
records the same strips and configuration digest is skipped unless ``force``. A cell that
fails is reported with its reason and never stops the others.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import hashlib
import json
import logging
import os
import threading
import time
import traceback
import uuid
from pathlib import Path

from tqdm import tqdm

from data_products import grid, writers
from data_products.store import ProductsStore

from pipeline import console
from pipeline.dem.cell import RASTER_SPECS, process_cell, write_cell_rasters
from pipeline.config import Config
from pipeline.detection.detect import detector_id, load_detector
from pipeline.publish.assemble import assemble, live_cells
from pipeline.publish.parts import part_digest, read_part_meta, recorded_part_digest, slump_cell
from pipeline.quantify.climate import load_climate
from pipeline.strips.names import Strip
from pipeline.strips.read import StripFootprintError, StripReadError, cells_for_strips, strip_bounds, strip_meets
from pipeline.strips.index import load_strips

log = logging.getLogger(__name__)


def inputs_digest(strips: list[Strip], cfg: Config) -> str:
    """Hash of the strips' names (and their metadata files' acquisition times, where read)
    and the configuration: what a cell's result depends on."""
    h = hashlib.sha256(cfg.dem_digest().encode())
    for s in sorted(strips, key=lambda s: s.dem):
        h.update(s.meta.name.encode())
        if s.meta.acquired is not None:
            h.update(s.meta.acquired.isoformat().encode())
    return h.hexdigest()[:16]


def footprints(strips: list[Strip]) -> list[Strip]:
    """The strips with their EPSG:3413 bounds filled in (read once from each header when the
    source gave none); a strip whose header cannot be read keeps None and is reported, with
    its reason, by the cell that reads it. A footprint that cannot be a strip's (NaN,
    inverted, larger than any strip, outside the Arctic) leaves the strip out, with a warning
    naming its file: one broken STAC item never plans millions of cells."""
    out = []
    for s in strips:
        try:
            s = dataclasses.replace(s, bounds=strip_bounds(s))
        except StripFootprintError as exc:  # NaN, inverted or continent-sized: never planned
            log.warning("strip left out: %s", exc)
            continue
        except StripReadError as exc:
            log.warning("footprint unknown, the strip is offered to every cell: %s", exc)
        out.append(s)
    return out


def plan_cells(strips: list[Strip], min_coverage: float) -> list[grid.Cell]:
    """Cells some strip covers at least ``min_coverage`` of (by its footprint where the source
    gives one, else by bounding box): cells the strips merely graze are left out."""
    return cells_for_strips(strips, min_coverage=min_coverage)


def strips_for(cell: grid.Cell, strips: list[Strip]) -> list[Strip]:
    """Strips whose footprint meets the cell (and those whose footprint is unknown)."""
    return [s for s in strips if strip_meets(s, cell)]


def _recorded_digest(meta_path: Path) -> str | None:
    """The inputs digest a published cell recorded; None when absent, unreadable, or when
    a raster it lists is missing or does not match its checksum: the cell is processed again."""
    if not meta_path.exists():
        return None
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        log.warning("%s is unreadable (%s); the cell is processed again", meta_path, exc)
        return None
    if not isinstance(meta, dict):
        log.warning("%s is not a JSON object; the cell is processed again", meta_path)
        return None
    if meta.get("files"):
        problem = writers.files_intact(meta_path.parent, meta["files"])
    else:  # written before checksums: decode once, then record them so that this happens once
        problem = _rasters_readable(meta_path.parent)
        if not problem:
            meta["files"] = {f"{n}.tif": writers.file_sha256(meta_path.parent / f"{n}.tif") for n in RASTER_SPECS}
            try:
                writers.write_json(meta_path, meta)
            except OSError as exc:
                log.warning("%s: could not record raster checksums (%s)", meta_path, exc)
    if problem:
        log.warning("%s; the cell is processed again", problem)
        return None
    return meta.get("inputs_digest")


def _rasters_readable(folder: Path) -> str:
    """For cells written before checksums were recorded: "" when every raster decodes in
    full, else the first problem."""
    import rasterio

    for name in RASTER_SPECS:
        p = folder / f"{name}.tif"
        try:
            with rasterio.open(p) as src:
                src.read(1)
        except (rasterio.errors.RasterioError, OSError) as exc:  # missing, truncated, not a GeoTIFF
            return f"{p}: unreadable ({type(exc).__name__}: {exc})"
    return ""


def run_cell(cell_id: str, strips: list[Strip], out: Path, cfg: Config, digest: str) -> dict:
    """Process and publish one cell; never raises (a failure is returned with its reason)."""
    with cell_log(out, cell_id):
        log.info("DEM stage of %s: %d strips", cell_id, len(strips))
        r = _run_cell(cell_id, strips, out, cfg, digest)
        log.info("DEM stage of %s: %s in %.1f s %s", cell_id, r["status"], r["seconds"], r.get("error") or "")
        return r


def _run_cell(cell_id: str, strips: list[Strip], out: Path, cfg: Config, digest: str) -> dict:
    t0 = time.perf_counter()
    try:
        cell = grid.parse_cell_id(cell_id)
        result = process_cell(strips, cell, cfg, warn=lambda m: None)
        if result.status == "no_data":
            unread = [w for w in result.warnings if w.startswith("skipping strip ")]
            if strips and len(unread) == len(strips):  # not an empty cell: its inputs are broken
                return {"cell_id": cell_id, "status": "failed", "seconds": time.perf_counter() - t0,
                        "error": f"none of its {len(strips)} strips could be read (first: {unread[0]})",
                        "warnings": result.warnings}
            return {"cell_id": cell_id, "status": "no_data", "seconds": time.perf_counter() - t0,
                    "error": "no strip has valid pixels in this cell", "warnings": result.warnings}
        write_cell_rasters(result, out, cfg, inputs_digest=digest)
        return {"cell_id": cell_id, "status": result.status, "seconds": time.perf_counter() - t0,
                "n_strips": len(result.strips), "warnings": result.warnings, "timings_s": result.timings_s}
    except Exception as exc:  # one bad cell never stops the others
        return {"cell_id": cell_id, "status": "failed", "seconds": time.perf_counter() - t0,
                "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(limit=5)}


def _record_failure(out: Path, result: dict) -> None:
    """Keep a cell's failure beside its (previous, intact) products; cleared on success."""
    failure = ProductsStore(out).tile_failure_path(result["cell_id"])
    if result["status"] in ("failed", "no_data"):
        at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        writers.write_json(failure, {"status": result["status"], "error": result.get("error"), "at": at})
    else:
        failure.unlink(missing_ok=True)


@functools.lru_cache(maxsize=2)
def _stage_context(cfg: Config, climate_path: str | None, detector_key: str, climate_key: str) -> tuple:
    """The detector and climate of a worker process, loaded once per process and again when
    the weights or the climate file change (their digests are part of the key)."""
    return load_detector(cfg.detection), load_climate(climate_path, cfg.quantify.summer_months)


def slump_task(cell_id: str, out: Path, cfg: Config, climate_path: str | None, digest: str,
               detector_key: str = "", climate_key: str = "") -> dict:
    """The slump stage of one cell (a task: runs in any worker process); never raises."""
    with cell_log(out, cell_id):
        log.info("slump stage of %s", cell_id)
        try:
            with _STAGE_CONTEXT_LOCK:  # threads of one worker load the detector and climate once
                detector, climate = _stage_context(cfg, climate_path, detector_key, climate_key)
        except Exception as exc:
            return {"cell_id": cell_id, "status": "failed", "error": f"{type(exc).__name__}: {exc}", "seconds": 0.0}
        r = slump_cell(out, cell_id, cfg, detector, climate, digest)
        log.info("slump stage of %s: %s, %s slumps in %.1f s %s", cell_id, r["status"], r.get("n_slumps", 0),
                 r["seconds"], r.get("error") or "")
        return r


_STAGE_CONTEXT_LOCK = threading.Lock()


class LockTimeout(RuntimeError):
    """Another run holds the products folder for longer than the lock timeout."""


@contextlib.contextmanager
def products_lock(out: Path, timeout_s: float = 3600.0, poll_s: float = 1.0):
    """An exclusive lock on the products folder for a whole run (DEM stage, slump stage,
    publishing): a second run or job worker on the same folder waits, saying which process
    holds it, and gives up with :class:`LockTimeout` after ``timeout_s`` (0: at once). The
    DEM stage of one run never swaps rasters under another's slump stage. The lock is
    ``fcntl.flock`` on ``PRODUCTS/.publish.lock``, released by the kernel if the holder dies."""
    import fcntl

    Path(out).mkdir(parents=True, exist_ok=True)
    path = Path(out) / ".publish.lock"
    with open(path, "a+") as fh:
        t0, told = time.monotonic(), False
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                fh.seek(0)
                holder = fh.read().strip() or "another process"
                waited = time.monotonic() - t0
                if waited >= timeout_s:
                    raise LockTimeout(f"{out} is in use by {holder} (waited {waited:.0f} s; lock {path}); "
                                      "try again when it has finished") from None
                if not told:
                    console.say(f"rts run: waiting for {holder} to finish with {out} (up to {timeout_s:.0f} s)")
                    told = True
                time.sleep(min(poll_s, max(timeout_s - waited, 0.01)))
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {os.uname().nodename} since "
                 f"{dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')}")
        fh.flush()
        try:
            yield
        finally:
            fh.seek(0)
            fh.truncate()
            fh.flush()
            fcntl.flock(fh, fcntl.LOCK_UN)


_LOG_LEVEL_LOCK = threading.Lock()
_LOG_LEVEL_USERS = [0, logging.NOTSET]  # tasks inside cell_log, the root level before the first


@contextlib.contextmanager
def cell_log(out: Path, cell_id: str):
    """Log records of the task go to ``PRODUCTS/logs/<cell>.log`` too (appended): only the
    records of the thread running the task, so that a worker running several cells at once
    (``dask worker --nthreads 2``) keeps each cell's lines in its own log. The root level is
    raised to INFO while any task runs and restored after the last."""
    folder = Path(out) / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(folder / f"{cell_id}.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    me = threading.get_ident()
    handler.addFilter(lambda record: record.thread == me)
    root = logging.getLogger()
    with _LOG_LEVEL_LOCK:
        if _LOG_LEVEL_USERS[0] == 0:
            _LOG_LEVEL_USERS[1] = root.level
            root.setLevel(min(root.level, logging.INFO) if root.level else logging.INFO)
        _LOG_LEVEL_USERS[0] += 1
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()
        with _LOG_LEVEL_LOCK:
            _LOG_LEVEL_USERS[0] -= 1
            if _LOG_LEVEL_USERS[0] == 0:
                root.setLevel(_LOG_LEVEL_USERS[1])


class Executor:
    """Where cell tasks run: in this process (one worker, no scheduler), on a Dask
    ``LocalCluster`` of ``workers`` single-threaded processes, or on an existing Dask
    scheduler (``scheduler`` or ``DASK_SCHEDULER_ADDRESS``), e.g. one started by
    dask-jobqueue on SLURM. Tasks never raise for a bad cell (they return its failure);
    a task whose worker died is retried ``retries`` times by Dask, then reported."""

    def __init__(self, workers: int = 1, scheduler: str | None = None, retries: int = 2):
        self.workers, self.retries = max(1, int(workers)), retries
        self.scheduler = scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS") or None
        self.client = self.cluster = None

    def __enter__(self) -> "Executor":
        if self.scheduler or self.workers > 1:
            from dask.distributed import Client, LocalCluster

            if not log.isEnabledFor(logging.DEBUG):  # Dask's chatter (its config sets INFO on import)
                for name in list(logging.root.manager.loggerDict):
                    if name.split(".")[0] in ("distributed", "tornado"):
                        logging.getLogger(name).setLevel(logging.WARNING)

            if self.scheduler:
                self.client = Client(self.scheduler, timeout="30s")
            else:
                self.cluster = LocalCluster(n_workers=self.workers, threads_per_worker=1, processes=True,
                                            dashboard_address=None, silence_logs=logging.ERROR)
                try:
                    self.client = Client(self.cluster)
                except BaseException:  # close the cluster whatever stopped the client, then re-raise
                    self.cluster.close()
                    raise
        return self

    def __exit__(self, *exc) -> None:
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()

    @property
    def description(self) -> str:
        if self.scheduler:
            return f"Dask scheduler {self.scheduler}"
        return f"Dask LocalCluster, {self.workers} workers" if self.client else "1 worker (in process)"

    def map(self, fn, jobs: list[tuple], desc: str, progress: bool, on_result=None, should_stop=None) -> list[dict]:
        """``fn(*job)`` for every job; a progress bar with cells done / failed and the ETA;
        ``on_result(result, done, total)`` after each; when ``should_stop()`` turns true, jobs
        not yet started are dropped (those in flight finish)."""
        results: list[dict] = []
        bar = tqdm(total=len(jobs), unit="cell", desc=desc, disable=not progress or not jobs)

        def record(r: dict) -> None:
            results.append(r)
            bar.set_postfix(failed=sum(x["status"] == "failed" for x in results))
            bar.update()
            if on_result is not None:
                on_result(r, len(results), len(jobs))

        stopping = should_stop or (lambda: False)
        if self.client is None:
            for job in jobs:
                if stopping():
                    break
                record(fn(*job))
        else:
            from dask.distributed import as_completed as dask_completed

            tag = desc.replace(" ", "-")
            futures = {self.client.submit(fn, *job, key=f"{tag}-{job[0]}-{uuid.uuid4().hex[:8]}", retries=self.retries,
                                          pure=False): job for job in jobs}
            for fut in dask_completed(futures):
                if stopping():
                    self.client.cancel([f for f in futures if not f.done()])
                    if fut.cancelled():
                        continue
                try:
                    record(fut.result())
                except Exception as exc:  # the worker died on every attempt (e.g. out of memory)
                    record({"cell_id": futures[fut][0], "status": "failed", "error": f"{type(exc).__name__}: {exc}",
                            "seconds": 0.0})
        bar.close()
        return results


def _verified(out: Path, result: dict, digests: dict[str, str]) -> dict:
    """A slump-stage result that says "ok" only if its whole part, with the digest it was
    asked for, is on disk; otherwise a failure naming what is missing (recomputed next run)."""
    if result.get("status") != "ok":
        return result
    meta, problem = read_part_meta(out, result["cell_id"])
    if meta is None or meta.get("digest") != digests.get(result["cell_id"]):
        problem = problem or "the part on disk is not the one this run computed"
        log.error("slump stage of %s reported ok but %s", result["cell_id"], problem)
        return dict(result, status="failed", error=f"part not published: {problem}")
    return result


class Cancelled(RuntimeError):
    """The run was asked to stop (a cancelled reprocessing job)."""


def run(strips_source: str | Path, out: str | Path, cfg: Config, *, tiles: list[str] | None = None,
        bbox: tuple[float, float, float, float] | None = None, climate: str | Path | None = None,
        workers: int = 1, scheduler: str | None = None, force: bool = False, progress: bool = True,
        on_progress=None, lock_timeout_s: float = 3600.0, asset_root: str | None = None) -> dict:
    """Run the pipeline over every cell the strips cover (or ``tiles``, or the cells meeting
    ``bbox``, EPSG:3413 m): the DEM stage per cell, then the slump stage per cell, then
    publish. ``on_progress(fraction, message)`` is called after each cell; if it returns
    False the run stops after the cells in flight (:class:`Cancelled`). ``strips_source`` is a
    folder, a STAC catalog or API, or PGC's strip index (``cfg.selection`` picks the strips;
    ``asset_root`` points the index's asset URLs at a mirror). Returns a summary,
    also written to ``PRODUCTS/run_summary.json``. The products folder is locked for the
    whole run (:func:`products_lock`; a second run waits up to ``lock_timeout_s``)."""
    out = Path(out).resolve()  # workers of a remote scheduler have their own working directory
    t0 = time.time()
    load_detector(cfg.detection)  # fails now, not after the DEM stage, if the configured weights are missing
    strips = footprints(load_strips(str(strips_source), cfg.selection, asset_root=asset_root))
    cells = select_cells(strips, cfg, tiles, bbox)
    out.mkdir(parents=True, exist_ok=True)
    with products_lock(out, lock_timeout_s):
        return _run_locked(out, strips, cells, cfg, climate, workers, scheduler, force, progress, on_progress, t0)


def select_cells(strips: list[Strip], cfg: Config, tiles: list[str] | None = None,
                 bbox: tuple[float, float, float, float] | None = None) -> list[grid.Cell]:
    """The cells a run over ``strips`` processes: those the strips cover
    (:func:`plan_cells`), narrowed to ``tiles`` and to the cells meeting ``bbox`` (EPSG:3413 m)."""
    cells = plan_cells(strips, cfg.sources.min_plan_coverage_fraction)
    if tiles:
        wanted = {grid.parse_cell_id(t).id for t in tiles}  # raises a clear error on a bad id
        cells = [c for c in cells if c.id in wanted]
        missing = wanted - {c.id for c in cells}
        if missing:
            log.warning("no strip covers cell(s) %s", ", ".join(sorted(missing)))
    if bbox is not None:
        xmin, ymin, xmax, ymax = grid.parse_bbox(bbox)  # a clear error for an inverted or off-grid box
        cells = [c for c in cells if c.bounds[0] < xmax and c.bounds[2] > xmin
                 and c.bounds[1] < ymax and c.bounds[3] > ymin]
    return cells


def cell_jobs(out: Path, strips: list[Strip], cells: list[grid.Cell], cfg: Config, force: bool = False
              ) -> tuple[list[tuple], list[str]]:
    """(DEM-stage jobs ``(cell id, its strips, out, cfg, inputs digest)``, ids of the cells
    already up to date: their recorded inputs digest matches and they did not fail)."""
    jobs, skipped = [], []
    store = ProductsStore(out)
    for c in cells:
        mine = strips_for(c, strips)
        digest = inputs_digest(mine, cfg)
        if (not force and _recorded_digest(store.cell_meta_path(c.id)) == digest
                and not store.tile_failure_path(c.id).exists()):
            skipped.append(c.id)
            continue
        jobs.append((c.id, mine, out, cfg, digest))
    return jobs, skipped


def _run_locked(out: Path, strips, cells, cfg: Config, climate, workers, scheduler, force, progress, on_progress,
                t0: float) -> dict:
    jobs, skipped = cell_jobs(out, strips, cells, cfg, force)
    stop = {"requested": False}

    def report(stage: str, weight: float, offset: float):
        def cb(r: dict, done: int, total: int) -> None:
            if on_progress is not None and not stop["requested"]:
                msg = f"{stage}: {done}/{total} cells ({r['cell_id']} {r['status']})"
                if on_progress(offset + weight * done / max(total, 1), msg) is False:
                    stop["requested"] = True
        return cb

    with Executor(workers, scheduler) as ex:
        console.say(f"rts run: {len(strips)} strips, {len(cells)} cells ({len(skipped)} up to date, {len(jobs)} to process) "
              f"on {ex.description} -> {out}")
        stopped = lambda: stop["requested"]  # noqa: E731
        results = ex.map(run_cell, jobs, "DEM stage", progress, report("DEM stage", 0.8, 0.0), stopped)
        for r in results:
            _record_failure(out, r)
        if stop["requested"]:
            raise Cancelled(f"stopped after {len(results)} of {len(jobs)} cells")
        # slump stage: every published cell whose part is out of date (its own or a neighbour's
        # rasters changed, or the configuration, detector or climate did)
        climate_path = str(Path(climate).resolve()) if climate else None
        det_id = detector_id(cfg.detection)
        clim_id = writers.file_sha256(climate_path) if climate_path and Path(climate_path).exists() else "none"
        stage = []
        for cid in live_cells(out):
            d = part_digest(out, grid.parse_cell_id(cid), cfg, det_id, clim_id)
            if force or recorded_part_digest(out, cid) != d:
                stage.append((cid, out, cfg, climate_path, d, det_id, clim_id))
        slump_results = ex.map(slump_task, stage, "slump stage", progress, report("slump stage", 0.15, 0.8),
                               stopped)
        if stop["requested"]:
            raise Cancelled(f"stopped in the slump stage after {len(slump_results)} of {len(stage)} cells")
        slump_results = [_verified(out, r, {j[0]: j[4] for j in stage}) for r in slump_results]
        published = assemble(out, cfg)

    failed = [r for r in results if r["status"] in ("failed", "no_data")]
    failed += [dict(r, error="slump stage: " + r["error"]) for r in slump_results if r["status"] == "failed"]
    summary = {
        "cells": len(cells), "done": sum(r["status"] in ("ok", "too_few_dems") for r in results),
        "skipped": len(skipped), "failed": len(failed), "slump_cells": len(stage),
        "seconds": round(time.time() - t0, 1), **published, "detector": det_id,
        "failures": {r["cell_id"]: r["error"] for r in failed}, "results": results, "slump_results": slump_results,
    }
    writers.write_json(out / "run_summary.json", summary)
    if on_progress is not None:
        on_progress(1.0, f"published {published['slumps']} slumps")
    console.say(f"rts run: {summary['done']} cells processed, {summary['skipped']} skipped, {summary['failed']} failed; "
          f"{published['slumps']} slumps, {published['volume_m3']:.4g} m3, "
          f"{published['carbon_kg_yr']:.4g} kg C/yr ({det_id}) in {summary['seconds']} s")
    for cid, err in summary["failures"].items():
        console.say(f"  {cid}: {err}")
    return summary
