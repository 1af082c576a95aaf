"""Writers for the product files: schema-checked, spatially sorted, atomic.

Every file is written to a hidden temporary name in the destination folder and renamed
into place (``os.replace``, atomic on POSIX), so a reader opening the products during a
publish sees either the previous file or the new one, never a half-written file, and a
failed write (full disk, an exception) leaves the previous file intact.

GeoParquet files are GeoParquet 1.1 (WKB geometry, a ``bbox`` covering column, EPSG:3413,
zstd) sorted along a Hilbert curve over the whole EPSG:3413 grid, so row groups are
spatially compact and bbox queries skip most of a large file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import uuid
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from geopandas.io.arrow import _geopandas_to_arrow  # what to_parquet uses; pinned geopandas

from . import schema
from .grid import CRS, ORIGIN_M

#: Hilbert-curve extent: the whole ArcticDEM grid (EPSG:3413 m)
HILBERT_BOUNDS = (ORIGIN_M, ORIGIN_M, -ORIGIN_M, -ORIGIN_M)
ROW_GROUP_SIZE = 65536


class SchemaError(ValueError):
    """A frame does not match the product contract."""


@contextlib.contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside ``path``; on success rename it onto ``path``, on error
    remove it (the previous ``path``, if any, is untouched)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        yield tmp
        if tmp.is_file():
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def fsync_dir(folder: str | Path) -> None:
    """Make a rename in ``folder`` durable (POSIX: the directory entry is only on disk once
    the directory itself is synced); a no-op where directories cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    with contextlib.suppress(OSError):  # some file systems cannot sync a directory
        os.fsync(fd)
    os.close(fd)


def file_sha256(path: str | Path, length: int = 16) -> str:
    """Hex SHA-256 of a file's bytes (first ``length`` characters), read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:length]


def files_intact(folder: str | Path, checksums: dict | None) -> str:
    """Check files against recorded checksums (name -> :func:`file_sha256`): "" when all
    are there and match, else what is wrong (the first problem found)."""
    if not checksums:
        return "no checksums recorded"
    if not isinstance(checksums, dict) or not all(isinstance(k, str) and isinstance(v, str) and v
                                                  for k, v in checksums.items()):
        return f"{folder}: the recorded checksums are malformed"
    for name, digest in checksums.items():
        p = Path(folder) / name
        if not p.is_file():
            return f"{p}: missing"
        try:
            actual = file_sha256(p, len(digest))
        except OSError as exc:
            return f"{p}: unreadable ({exc})"
        if actual != digest:
            return f"{p}: checksum {actual} does not match the recorded {digest} (truncated or replaced)"
    return ""


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _finite(obj):
    """NaN and infinities as null: strict JSON has no NaN."""
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def write_json(path: str | Path, obj) -> None:
    write_text(path, json.dumps(_finite(obj), indent=1, default=str, allow_nan=False) + "\n")


def conform(frame: pd.DataFrame, columns: tuple[schema.Column, ...], where: str) -> pd.DataFrame:
    """The frame's columns in contract order with contract dtypes; raises SchemaError naming
    ``where`` and the column when one is missing or a required value is null."""
    missing = [c.name for c in columns if c.name not in frame.columns]
    if missing:
        raise SchemaError(f"{where}: missing column(s) {', '.join(missing)}")
    out = frame[[c.name for c in columns]].copy()
    for c in columns:
        if c.name == "geometry":
            continue
        s = out[c.name]
        t = c.type
        if pa.types.is_floating(t):
            out[c.name] = pd.to_numeric(s, errors="coerce").astype("float64")
        elif pa.types.is_integer(t):
            out[c.name] = pd.to_numeric(s).astype(t.to_pandas_dtype())
        elif pa.types.is_date(t):
            out[c.name] = pd.to_datetime(s).dt.date.astype(object).where(s.notna(), None)
        elif pa.types.is_timestamp(t):
            out[c.name] = pd.to_datetime(s, utc=True).astype(f"datetime64[{t.unit}, UTC]")
        elif pa.types.is_string(t):
            out[c.name] = s.astype(object).where(s.notna(), None)
        if not c.nullable and out[c.name].isna().any():
            raise SchemaError(f"{where}: column {c.name} has empty values ({int(out[c.name].isna().sum())} rows)")
    return out


def _check_types(path: Path, columns: tuple[schema.Column, ...]) -> None:
    got = pq.read_schema(path)
    for c in columns:
        if c.name == "geometry":
            continue
        t = got.field(c.name).type
        if len(got) and t != c.type and not pa.types.is_null(t):
            raise SchemaError(f"{path.name}: column {c.name} written as {t}, contract says {c.type}")


def hilbert_sort(gdf: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Rows ordered along a Hilbert curve over the whole grid (stable for equal keys)."""
    if not len(gdf):
        return gdf
    key = gdf.geometry.hilbert_distance(total_bounds=HILBERT_BOUNDS, level=16)
    return gdf.iloc[np.argsort(key.to_numpy(), kind="stable")].reset_index(drop=True)


def write_geoparquet(gdf: gpd.GeoDataFrame, path: str | Path, columns: tuple[schema.Column, ...],
                     *, sort: bool = True, metadata: dict[bytes, bytes] | None = None) -> Path:
    """A schema-conformant GeoParquet 1.1 file (WKB, bbox covering, EPSG:3413, zstd), atomically;
    ``metadata`` is added to the file's key-value metadata (beside ``geo``)."""
    path = Path(path)
    if gdf.crs is None or gdf.crs.to_epsg() != 3413:
        raise SchemaError(f"{path.name}: geometries must be {CRS}, got {gdf.crs}")
    frame = conform(gdf, columns, path.name)
    out = gpd.GeoDataFrame(frame, geometry="geometry", crs=CRS)
    if sort:
        out = hilbert_sort(out)
    table = _geopandas_to_arrow(out, index=False, geometry_encoding="WKB", schema_version="1.1.0",
                                write_covering_bbox=True)
    # all-empty columns come out as Arrow null: give every column its contract type
    for c in columns:
        if c.name != "geometry" and table.schema.field(c.name).type != c.type:
            i = table.schema.get_field_index(c.name)
            table = table.set_column(i, pa.field(c.name, c.type), table.column(i).cast(c.type))
    if metadata:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd", row_group_size=ROW_GROUP_SIZE)
        _check_types(tmp, columns)
    return path


def write_parquet(df: pd.DataFrame, path: str | Path, columns: tuple[schema.Column, ...],
                  *, metadata: dict[bytes, bytes] | None = None) -> Path:
    """A schema-conformant plain Parquet file (zstd), atomically (``metadata``: extra key-value
    metadata)."""
    path = Path(path)
    frame = conform(df, columns, path.name)
    table = pa.Table.from_pandas(frame, schema=schema.arrow_schema(columns).with_metadata(metadata),
                                 preserve_index=False, safe=False)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd", row_group_size=ROW_GROUP_SIZE)
    return path


def write_csv(frame: pd.DataFrame, path: str | Path) -> Path:
    """CSV (UTF-8, comma), geometry as WKT in EPSG:3413 when present; atomically."""
    out = pd.DataFrame(frame).copy()
    if "geometry" in out.columns:
        out["geometry_wkt"] = gpd.GeoSeries(out.pop("geometry")).to_wkt(rounding_precision=2)
    with atomic_path(path) as tmp:
        out.to_csv(tmp, index=False)
    return Path(path)


def sha256_multihash(path: str | Path) -> str:
    """The file's SHA-256 as a multihash hex string (``1220`` + digest), as STAC's
    ``file:checksum`` expects."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return "1220" + h.hexdigest()
