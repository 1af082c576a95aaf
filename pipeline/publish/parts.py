"""The slump stage of one cell and its part (DESIGN step 10, first step).

:func:`slump_cell`, for one cell whose DEM rasters exist: the mosaic with its neighbours'
halo, the candidates, the detector and the quantification, written as a *part* under
``PRODUCTS/parts/<cell>/`` (``slumps.parquet``, ``timeseries.parquet``, ``candidates.parquet``
and, last, ``part.json`` with the digest of everything the part depends on - the DEM digests
of the cell and its eight neighbours, the configuration, the detector and the climate file -
and the checksum of every file), so that a rerun recomputes exactly the parts whose inputs
changed and a damaged part is found. A cell owns the slumps whose centroid it holds, so a
slump crossing a cell edge comes out once, with the same id whatever order the cells ran in.
:mod:`pipeline.publish.assemble` then gathers the parts into the products.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

import pandas as pd

from data_products import grid, schema, writers
from data_products.store import ProductsStore

from pipeline import __version__
from pipeline.detection.candidates import find_candidates, read_mosaic, stable_variogram
from pipeline.config import Config
from pipeline.detection.detect import detect_slumps
from pipeline.quantify.carbon import CarbonDensity
from pipeline.quantify.climate import Climate
from pipeline.quantify.slumps import quantify

log = logging.getLogger(__name__)

CANDIDATES = schema.CANDIDATES


def _cell_digest(products: Path, cell_id: str) -> str:
    try:
        return ProductsStore(products).read_cell_meta(cell_id).get("inputs_digest") or "?"
    except (OSError, ValueError):
        return "none"


def part_digest(products: Path, cell: grid.Cell, cfg: Config, detector_id: str, climate_id: str) -> str:
    """What a cell's slump part depends on: its own and its neighbours' DEM digests (the halo),
    the whole configuration, the detector and the climate file."""
    h = hashlib.sha256(f"{cfg.digest()}|{detector_id}|{climate_id}|{__version__}".encode())
    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            other = grid.Cell(cell.ix + dx, cell.iy + dy)
            h.update(f"{other.id}:{_cell_digest(products, other.id)};".encode())
    return h.hexdigest()[:16]


PART_FILES = ("slumps.parquet", "timeseries.parquet", CANDIDATES)


def read_part_meta(products: Path, cell_id: str) -> tuple[dict | None, str]:
    """A cell's ``part.json`` and "" when the part is whole (every file it lists there and
    matching its checksum), else (None, what is wrong)."""
    store = ProductsStore(products)
    folder, meta_path = store.part_dir(cell_id), store.part_meta_path(cell_id)
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError:
        return None, "no part published"
    except (OSError, json.JSONDecodeError) as exc:
        return None, f"{meta_path} unreadable ({exc})"
    if not isinstance(meta, dict):
        return None, f"{meta_path} is not a JSON object"
    problem = writers.files_intact(folder, meta.get("files"))
    return (None, problem) if problem else (meta, "")


def recorded_part_digest(products: Path, cell_id: str) -> str | None:
    """The digest a whole part recorded; None (the part is recomputed) when it is missing,
    unreadable or a file of it is missing or altered."""
    meta, problem = read_part_meta(products, cell_id)
    if meta is None and problem != "no part published":
        log.warning("%s: part of %s is recomputed", problem, cell_id)
    return meta.get("digest") if meta else None


def slump_cell(products: str | Path, cell_id: str, cfg: Config, detector, climate: Climate, digest: str) -> dict:
    """Detect and quantify the slumps one cell owns and write its part; never raises."""
    products = Path(products)
    store = ProductsStore(products)
    t0 = time.perf_counter()
    try:
        cell = grid.parse_cell_id(cell_id)
        res = cfg.grid.resolution_m
        mosaic = read_mosaic(products, cell, cfg.candidates.halo_m, res)
        vg = stable_variogram(mosaic, cfg.candidates, res)
        cands = find_candidates(mosaic, cfg.candidates, res, vg)
        dets = detect_slumps(mosaic, cands, cfg.detection, detector)
        now = pd.Timestamp.now(tz="UTC").floor("s")
        dates = store.read_cell_meta(cell_id).get("dates") or []
        inv, ts = quantify(mosaic, dets, vg, cfg, climate, CarbonDensity(cfg.quantify), now, dates)
        folder = store.part_dir(cell_id)
        writers.write_geoparquet(inv, folder / "slumps.parquet", schema.INVENTORY_COLUMNS, sort=False)
        writers.write_parquet(ts, folder / "timeseries.parquet", schema.TIMESERIES_COLUMNS)
        with writers.atomic_path(folder / CANDIDATES) as tmp:
            cands.to_parquet(tmp, index=False, schema_version="1.1.0", write_covering_bbox=True, compression="zstd")
        seconds = time.perf_counter() - t0
        writers.write_json(store.part_meta_path(cell_id), {
            "cell_id": cell_id, "digest": digest, "n_slumps": len(inv), "n_candidates": len(cands),
            "volume_m3": float(inv.volume_m3.sum()), "seconds": round(seconds, 3),
            "files": {name: writers.file_sha256(folder / name) for name in PART_FILES},
            "processed_at": now.isoformat(), "variogram": {"nugget_m2": vg.nugget, "psill_m2": vg.psill,
                                                           "range_m": vg.range_m, "psill_long_m2": vg.psill_long,
                                                           "range_long_m": vg.range_long_m},
        })
        store.part_failure_path(cell_id).unlink(missing_ok=True)
        return {"cell_id": cell_id, "status": "ok", "n_slumps": len(inv), "seconds": seconds}
    except Exception as exc:  # one bad cell never stops the others; its previous part stays published
        log.exception("slump stage failed for %s", cell_id)
        error = f"{type(exc).__name__}: {exc}"
        try:
            writers.write_json(store.part_failure_path(cell_id), {"error": error})
        except OSError as write_exc:  # the failure still reaches the run summary
            log.error("could not record the failure of %s in its part folder: %s", cell_id, write_exc)
        return {"cell_id": cell_id, "status": "failed", "error": error, "seconds": time.perf_counter() - t0}
