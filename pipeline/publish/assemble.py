"""Publishing (DESIGN step 10): every cell's slump part assembled into the product files.

The second of two steps, so that rerunning one cell replaces exactly its rows: the first,
:func:`pipeline.publish.parts.slump_cell`, writes each cell's part under
``PRODUCTS/parts/<cell>/``; :func:`assemble` concatenates the whole parts into
``rts_inventory.parquet``, ``rts_timeseries.parquet``, ``candidates.parquet``,
``tiles.parquet``, the CSV exports, the data dictionary, the regional totals and the STAC
collection, each written atomically (:mod:`data_products.writers`), and the manifest last.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from data_products import grid, schema, stac, writers
from data_products.store import FAILURE, ProductsStore

from pipeline import __version__
from pipeline.detection.candidates import empty_candidates
from pipeline.config import Config
from pipeline.publish.parts import read_part_meta
from pipeline.quantify.totals import regional_totals

log = logging.getLogger(__name__)

CANDIDATES = schema.CANDIDATES
REGION_SUMMARY_CSV = schema.REGION_SUMMARY_CSV
YEARLY_TOTALS_CSV = schema.YEARLY_TOTALS_CSV


def _read_parts(products: Path, live: set[str]) -> tuple[list, list, list, dict]:
    inv, ts, cands, meta = [], [], [], {}
    store = ProductsStore(products)
    for cid in store.part_cells():
        folder = store.part_dir(cid)
        if cid not in live:
            continue  # its DEM products were removed: its slumps go too
        try:
            m, problem = read_part_meta(products, cid)
            if m is None:
                raise ValueError(problem)
            meta[cid] = m
            inv.append(gpd.read_parquet(folder / "slumps.parquet"))
            ts.append(pd.read_parquet(folder / "timeseries.parquet"))
            if (folder / CANDIDATES).exists():
                cands.append(gpd.read_parquet(folder / CANDIDATES))
        except Exception as exc:  # a damaged part is reported, the others published
            log.error("%s: part unreadable (%s); its cell's slumps are left out until it is rerun", folder, exc)
            meta.pop(cid, None)
    return inv, ts, cands, meta


def _tiles_frame(products: Path, parts_meta: dict) -> gpd.GeoDataFrame:
    rows = []
    store = ProductsStore(products)
    for cell, folder in store.tile_folders():
        row = {"tile_id": cell.id, "geometry": shapely.box(*cell.bounds), "status": "failed", "n_strips": 0,
               "n_slumps": 0, "volume_m3": 0.0, "inputs_digest": None, "seconds": None, "processed_at": None,
               "error": None}
        meta_path, fail_path = folder / schema.CELL_META, folder / FAILURE  # the folder as found
        if meta_path.exists():
            try:
                meta = json.loads(meta_path.read_text())
                row.update(status=meta.get("status", "ok"), n_strips=len(meta.get("strips", [])),
                           inputs_digest=meta.get("inputs_digest"), processed_at=meta.get("processed_at"),
                           seconds=float(sum(meta.get("timings_s", {}).values())))
            except (OSError, json.JSONDecodeError) as exc:
                row["error"] = f"cell.json unreadable: {exc}"
        if fail_path.exists():
            try:
                fail = json.loads(fail_path.read_text())
                row.update(status=fail.get("status", "failed"), error=fail.get("error"))
                row["processed_at"] = row["processed_at"] or fail.get("at")
            except (OSError, json.JSONDecodeError):
                row.update(status="failed", error="failure.json unreadable")
        slump_fail = store.part_failure_path(cell.id)
        if slump_fail.exists():
            try:
                err = json.loads(slump_fail.read_text()).get("error")
            except (OSError, json.JSONDecodeError):
                err = "unknown"
            row.update(status="failed", error=f"slump stage: {err} (the previous slumps stay published)")
        part = parts_meta.get(cell.id)
        if not part and row["status"] in ("ok", "too_few_dems") and meta_path.exists():
            # DEM rasters without a whole slump part: never "ok" with no slumps
            _, problem = read_part_meta(products, cell.id)
            row.update(status="failed", error=f"slump stage: {problem or 'part unreadable'} (rerun to recompute)")
        if part:
            row.update(n_slumps=int(part["n_slumps"]), volume_m3=float(part["volume_m3"]))
            row["seconds"] = (row["seconds"] or 0.0) + float(part.get("seconds", 0.0))
        rows.append(row)
    frame = pd.DataFrame(rows, columns=schema.names(schema.TILES_COLUMNS))
    return gpd.GeoDataFrame(frame, geometry="geometry", crs=grid.CRS)


def live_cells(out: Path) -> list[str]:
    """Cells with published DEM rasters (:meth:`ProductsStore.live_cells`)."""
    return ProductsStore(out).live_cells()


def assemble(products: str | Path, cfg: Config) -> dict:
    """Gather every cell's part into the product files (each written atomically).
    Returns counts for the run summary."""
    products = Path(products)
    live = set(live_cells(products))
    inv_parts, ts_parts, cand_parts, meta = _read_parts(products, live)
    inv = (gpd.GeoDataFrame(pd.concat(inv_parts, ignore_index=True), geometry="geometry", crs=grid.CRS)
           if inv_parts else gpd.GeoDataFrame(pd.DataFrame(columns=schema.names(schema.INVENTORY_COLUMNS)),
                                              geometry="geometry", crs=grid.CRS))
    ts = (pd.concat([t for t in ts_parts if len(t)], ignore_index=True) if any(len(t) for t in ts_parts)
          else pd.DataFrame(columns=schema.names(schema.TIMESERIES_COLUMNS)))
    dup = inv.rts_id.duplicated()
    if dup.any():  # two cells claiming one slump cannot happen with centroid ownership; guard anyway
        log.warning("%d duplicate rts_id(s) dropped: %s", int(dup.sum()), ", ".join(inv.rts_id[dup][:5]))
        inv = inv[~dup]
        ts = ts.drop_duplicates(["rts_id", "year"])
    cands = (gpd.GeoDataFrame(pd.concat([c for c in cand_parts if len(c)], ignore_index=True), geometry="geometry",
                              crs=grid.CRS) if any(len(c) for c in cand_parts) else empty_candidates())
    tiles = _tiles_frame(products, meta)

    writers.write_geoparquet(inv, products / schema.INVENTORY, schema.INVENTORY_COLUMNS)
    inv_sorted = gpd.read_parquet(products / schema.INVENTORY)
    order = {rid: i for i, rid in enumerate(inv_sorted.rts_id)}
    ts = ts.assign(_o=ts.rts_id.map(order)).sort_values(["_o", "year"]).drop(columns="_o")
    writers.write_parquet(ts, products / schema.TIMESERIES, schema.TIMESERIES_COLUMNS)
    writers.write_geoparquet(tiles, products / schema.TILES, schema.TILES_COLUMNS)
    with writers.atomic_path(products / CANDIDATES) as tmp:
        cands.to_parquet(tmp, index=False, schema_version="1.1.0", write_covering_bbox=True, compression="zstd")
    writers.write_csv(inv_sorted, products / schema.INVENTORY_CSV)
    writers.write_csv(pd.read_parquet(products / schema.TIMESERIES), products / schema.TIMESERIES_CSV)
    yearly, summary = regional_totals(inv_sorted, ts, cfg.quantify.temperature_driven_r)
    writers.write_csv(yearly, products / YEARLY_TOTALS_CSV)
    writers.write_csv(summary, products / REGION_SUMMARY_CSV)
    writers.write_text(products / schema.DICTIONARY_MD, schema.dictionary_markdown())
    writers.write_json(products / schema.DICTIONARY_JSON, schema.dictionary_json())

    dates = pd.to_datetime(pd.concat([inv_sorted.first_change, inv_sorted.last_change]).dropna())
    start = dates.min().to_pydatetime().replace(tzinfo=dt.timezone.utc) if len(dates) else None
    end = dates.max().to_pydatetime().replace(tzinfo=dt.timezone.utc) if len(dates) else None
    bounds = tiles.total_bounds if len(tiles) else None
    stac.write_collection(products, {
        schema.INVENTORY: {"rows": len(inv_sorted), "csv": schema.INVENTORY_CSV, "title": "RTS inventory"},
        schema.TIMESERIES: {"rows": len(ts), "csv": schema.TIMESERIES_CSV, "title": "Yearly volume loss per RTS"},
        schema.TILES: {"rows": len(tiles), "csv": None, "title": "Processed 2 km cells"},
    }, bounds, start, end, __version__)
    write_manifest(products, cfg)  # last: its checksums say the set above is complete and consistent
    arctic = summary[summary.region == "Arctic"]
    return {"slumps": len(inv_sorted), "timeseries_rows": len(ts), "candidates": len(cands),
            "volume_m3": float(inv_sorted.volume_m3.sum()) if len(inv_sorted) else 0.0,
            "carbon_kg_yr": float(np.nansum(inv_sorted.carbon_kg_yr)) if len(inv_sorted) else 0.0,
            "share_r_ge": float(arctic.share_r_ge.iloc[0]) if len(arctic) else float("nan")}


MANIFEST = schema.MANIFEST
PUBLISHED = (schema.INVENTORY, schema.TIMESERIES, schema.TILES, CANDIDATES, schema.INVENTORY_CSV,
             schema.TIMESERIES_CSV, YEARLY_TOTALS_CSV, REGION_SUMMARY_CSV, schema.DICTIONARY_MD,
             schema.DICTIONARY_JSON, schema.STAC_COLLECTION)


def write_manifest(products: Path, cfg: Config | None = None) -> None:
    """``PRODUCTS/manifest.json``: the SHA-256 of every published file, written after all of
    them, and the resolved configuration the products were made with (readers such as the
    dashboard take their thresholds from it). A reader (or :func:`verify_published`) that
    finds a file not matching it knows the set is mid-update or was interrupted; the next
    run's publishing rewrites it whole."""
    files = {name: writers.file_sha256(products / name) for name in PUBLISHED if (products / name).is_file()}
    writers.write_json(products / MANIFEST, {
        "pipeline_version": __version__, "files": files, "config": (cfg or Config()).to_dict(),
        "written_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")})


def verify_published(products: str | Path) -> str:
    """"" when every file the manifest lists matches its checksum, else the first problem."""
    products = Path(products)
    try:
        meta = json.loads((products / MANIFEST).read_text())
    except FileNotFoundError:
        return f"{products / MANIFEST}: missing (nothing published, or publishing never finished)"
    except (OSError, json.JSONDecodeError) as exc:
        return f"{products / MANIFEST}: unreadable ({exc})"
    return writers.files_intact(products, meta.get("files"))


