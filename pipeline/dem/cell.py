"""The DEM time-series stage for one 2 km cell: read, coregister, detect change, curvature.

``process_cell`` is the plain function (strips in, arrays out); ``write_cell_rasters``
is the I/O edge that publishes them as cloud-optimised GeoTIFFs under
``PRODUCTS/tiles/<cell id>/``.

Strips are read with a halo (``CoregConfig.halo_m``, at least ``resample_margin_m``) so that
horizontal corrections of up to the margin never pull nodata into the cell; results are
cropped to the cell's own grid.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
from pyproj import Transformer

from data_products import grid, schema, timebase, writers
from data_products.store import ProductsStore

from pipeline.dem.change import NODATA_DATE, ChangeResult, detect_steps
from pipeline.config import Config
from pipeline.dem.coreg import BundleResult, apply_offsets, coregister_stack, shift_mask
from pipeline.dem.snow import untrusted_tail
from pipeline.strips.names import Strip
from pipeline.strips.read import read_cell_array
from pipeline.dem.terrain import recent_surface, total_curvature

log = logging.getLogger(__name__)
RASTERS = ("dh", "dh_sigma", "t1", "t2", "n_obs", "n_before", "n_after", "confidence", "curvature", "elevation")


@dataclass
class CellResult:
    cell_id: str
    change: ChangeResult | None
    curvature: np.ndarray | None
    elevation: np.ndarray | None  # recent median surface (m), the base of curvature and slope
    strips: list[str]
    dates: list[str]
    bundle: BundleResult | None
    timings_s: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    status: str = "ok"  # ok | no_data | too_few_dems
    sensors: list[str] = field(default_factory=list)  # per strip, as its name gives it ("WV01", "W1W2", ...)

    def coreg_table(self) -> list[dict]:
        """Per DEM: its displacement relative to the set's mean, residuals, status."""
        if self.bundle is None:
            return []
        rows = []
        sensors = self.sensors or [""] * len(self.strips)
        for name, sensor, date, o in zip(self.strips, sensors, self.dates, self.bundle.offsets):
            rows.append({"strip": name, "sensor": sensor, "date": date, "dx_m": o.dx, "dy_m": o.dy, "dz_m": o.dz,
                         "n_pairs": o.n_pairs,
                         "residual_rms_m": o.residual_rms_m, "median_pair_nmad_m": o.median_pair_nmad_m,
                         "used": o.used, "reason": o.reason})
        return rows


def _days(d: dt.date) -> int:
    return timebase.days_since_epoch(d)


_TO_LONLAT = Transformer.from_crs(grid.CRS, "EPSG:4326", always_xy=True)


def cell_latitude(cell: grid.Cell) -> float:
    """Latitude (deg N) of the cell centre: the snow-free window depends on it."""
    x0, y0, x1, y1 = cell.bounds
    return float(_TO_LONLAT.transform((x0 + x1) / 2, (y0 + y1) / 2)[1])


def covers_cell(cell: grid.Cell, cfg: Config, halo_m: float):
    """``accept`` for :func:`read_cell_array`: "" when a window covers at least
    ``cfg.sources.min_cell_coverage_fraction`` of the cell itself (its halo left out), else why not."""
    hc = int(round(halo_m / cfg.grid.resolution_m))

    def covers(w) -> str:
        core = w.valid[hc:-hc, hc:-hc] if hc else w.valid
        cover = np.count_nonzero(core) / core.size
        return "" if cover >= cfg.sources.min_cell_coverage_fraction else f"covers {cover:.1%} of cell {cell.id}; not used"

    return covers


def process_cell(strips: list[Strip], cell: grid.Cell, cfg: Config, *, warn=None) -> CellResult:
    """Coregister every strip over ``cell``, fit the per-pixel step, compute curvature."""
    warnings: list[str] = []

    def _warn(msg: str) -> None:
        warnings.append(msg)
        (warn or log.warning)(msg)

    t0 = time.perf_counter()
    res = cfg.grid.resolution_m
    # coregistration sees the cell plus a wider halo: more stable ground, better offsets
    halo_m = max(cfg.coreg.resample_margin_m, cfg.coreg.halo_m)
    # straight into one stack in date order (a 46-strip stack with its halo is ~0.5 GB: no copy)
    keep, z, matched = read_cell_array(strips, cell, halo_m=halo_m, drop_bits=cfg.sources.bitmask_drop_bits,
                                       resolution_m=res, accept=covers_cell(cell, cfg, halo_m), warn=_warn)
    for w in keep:  # the stack holds the arrays; the windows keep only their strips
        w.z = w.matched = w.valid = None
    timings = {"read": time.perf_counter() - t0}
    names = [w.strip.meta.name for w in keep]
    dates = [w.strip.meta.date.isoformat() for w in keep]
    sensors = [w.strip.meta.sensor for w in keep]
    if not keep:
        return CellResult(cell.id, None, None, None, names, dates, None, timings, warnings, "no_data", sensors)

    t1 = time.perf_counter()
    bundle = coregister_stack(z, matched, res, cfg.coreg, seed=cell.ix * 7919 + cell.iy)
    timings["coregister"] = time.perf_counter() - t1
    for o in bundle.offsets:
        if not o.used:
            _warn(f"{names[o.index]}: dropped by the bundle adjustment in cell {cell.id}: {o.reason}")

    t2 = time.perf_counter()
    h = int(round(halo_m / res))
    m = int(round(cfg.coreg.resample_margin_m / res))
    inner = (slice(h - m, -(h - m) or None), slice(h - m, -(h - m) or None))  # cell + resample margin
    used = [o for o in bundle.offsets if o.used]
    zc = mc = None
    if used:
        zc = np.empty((len(used),) + cell.shape(res), np.float32)
        mc = np.empty(zc.shape, bool)
        for k, o in enumerate(used):
            zc[k] = apply_offsets(z[o.index][inner], o.dx, o.dy, o.dz, res)[m:-m, m:-m]
            mc[k] = shift_mask(matched[o.index][inner], o.dx, o.dy, res)[m:-m, m:-m]
    used_dates = np.array([_days(keep[o.index].strip.meta.date) for o in used], dtype=np.int64)
    del z, matched  # the stack with its halo is not needed past here: free it before the change model
    timings["resample"] = time.perf_counter() - t2
    if zc is None or len(used) < cfg.change.min_dems:
        _warn(f"cell {cell.id}: {len(used)} usable DEM(s), fewer than {cfg.change.min_dems}: change is undefined (nodata)")
        shape = cell.shape(res)
        empty = ChangeResult(np.full(shape, np.nan, np.float32), np.full(shape, np.nan, np.float32),
                             np.full(shape, NODATA_DATE, np.int32), np.full(shape, NODATA_DATE, np.int32),
                             np.zeros(shape, np.int16) if zc is None else np.isfinite(zc).sum(0).astype(np.int16),
                             np.full(shape, 255, np.uint8), np.full(shape, -1, np.int16), np.full(shape, -1, np.int16))
        surf = recent_surface(zc, cfg.terrain.latest_dems) if zc is not None else np.full(shape, np.nan, np.float32)
        curv = total_curvature(surf, res, cfg.terrain.smoothing_sigma_m)
        return CellResult(cell.id, empty, curv, surf, names, dates, bundle, timings, warnings, "too_few_dems", sensors)

    t3 = time.perf_counter()
    lat = cell_latitude(cell)
    tail = untrusted_tail(used_dates, lat, cfg.change)
    if tail.size:
        ends = [d for d in used_dates if d < tail[0]]
        _warn(f"cell {cell.id}: the newest acquisition(s) {', '.join(str(timebase.date_of(d)) for d in tail)} fall "
              f"outside the snow-free window at {lat:.1f} deg N: after "
              f"{timebase.date_of(ends[-1]) if ends else 'the record start'} only ground that dropped is measured "
              "(a rise could be snow)")
    change = detect_steps(zc, mc, used_dates, cfg.change, lat_deg=lat)
    timings["change"] = time.perf_counter() - t3
    t4 = time.perf_counter()
    surf = recent_surface(zc, cfg.terrain.latest_dems)
    curv = total_curvature(surf, res, cfg.terrain.smoothing_sigma_m)
    timings["terrain"] = time.perf_counter() - t4
    return CellResult(cell.id, change, curv, surf, names, dates, bundle, timings, warnings, "ok", sensors)


RASTER_SPECS = schema.CELL_RASTERS  # name -> (dtype, nodata, description), in the product contract


def write_cell_rasters(result: CellResult, out_dir: Path, cfg: Config, inputs_digest: str | None = None) -> Path:
    """Write the cell's rasters as COGs into ``out_dir/tiles/<cell>/`` atomically.

    Each file is written to a temporary name in the same folder and renamed into place,
    so a reader never sees a half-written raster; ``cell.json`` (written last) records the
    strips, the coregistration table, timings and the configuration digest.
    """
    cell = grid.parse_cell_id(result.cell_id)
    res = cfg.grid.resolution_m
    store = ProductsStore(out_dir)
    folder = store.tile_dir(result.cell_id)
    folder.mkdir(parents=True, exist_ok=True)
    h, w = cell.shape(res)
    arrays = {
        "dh": result.change.dh, "dh_sigma": result.change.dh_sigma, "t1": result.change.t1, "t2": result.change.t2,
        "n_obs": result.change.n_obs, "n_before": result.change.n_before, "n_after": result.change.n_after,
        "confidence": result.change.confidence, "curvature": result.curvature,
        "elevation": result.elevation,
    }
    for name, arr in arrays.items():
        dtype, nodata, desc = RASTER_SPECS[name]
        tmp = folder / f".{name}.tif.{uuid.uuid4().hex[:8]}.tmp"
        with rasterio.open(tmp, "w", driver="COG", width=w, height=h, count=1, dtype=dtype, crs=grid.CRS,
                           transform=cell.transform(res), nodata=nodata, compress="deflate",
                           predictor=3 if dtype == "float32" else 2, blocksize=512, overviews="NONE") as dst:
            dst.write(np.asarray(arr, dtype=dtype), 1)
            dst.set_band_description(1, desc)
            dst.update_tags(cell_id=result.cell_id, units=desc.rsplit(", ", 1)[-1])
        os.replace(tmp, folder / f"{name}.tif")
    writers.fsync_dir(folder)
    meta = {
        "cell_id": result.cell_id, "status": result.status, "bounds_3413": cell.bounds,
        "strips": result.strips, "dates": result.dates, "coregistration": result.coreg_table(),
        "rejected_pairs": [list(p) for p in (result.bundle.rejected_pairs if result.bundle else [])],
        "timings_s": {k: round(v, 3) for k, v in result.timings_s.items()}, "warnings": result.warnings,
        "config_digest": cfg.dem_digest(), "inputs_digest": inputs_digest,
        "processed_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "date_encoding": f"t1/t2: days since {timebase.EPOCH_ISO}",
        # checked before the rasters are reused (a truncated raster behind a valid cell.json
        # makes the cell run again)
        "files": {f"{name}.tif": writers.file_sha256(folder / f"{name}.tif") for name in arrays},
    }
    writers.write_text(store.cell_meta_path(result.cell_id), json.dumps(meta, indent=1, default=float))
    return folder
