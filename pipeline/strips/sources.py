"""Discovery of ArcticDEM strips: a local folder, a static STAC catalog or a STAC API.

Sources
-------
:func:`discover_strips` accepts a local folder (searched recursively for ``*_dem.tif``),
a static STAC catalog (a ``catalog.json``/``collection.json`` file, or a folder holding
one at its top level — e.g. the sample region's catalog written by
:func:`write_stac_catalog`), or the URL of a STAC API such as PGC's. STAC items carry
the DEM in asset ``dem``, the bitmask in asset ``mask`` (PGC's key; ``bitmask`` is
accepted too) and the matchtag in asset ``matchtag``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable, Iterable, Sequence

from pyproj import Transformer


from pipeline.strips.names import Strip, StripNameError, parse_strip_name
from pipeline.strips.read import StripReadError, describe_error, is_url, local_path


log = logging.getLogger(__name__)

WarnFn = Callable[[str], None]

STAC_COLLECTION_ID = "arcticdem-strips"
STAC_DEM_KEYS = ("dem",)
STAC_BITMASK_KEYS = ("mask", "bitmask")
STAC_MATCHTAG_KEYS = ("matchtag",)
STAC_CATALOG_FILES = ("catalog.json", "collection.json")


class NoStripsError(FileNotFoundError):
    """A folder or catalog holding no ArcticDEM strip."""


# --------------------------------------------------------------------------- discovery


def discover_strips(
    source: str | os.PathLike,
    *,
    warn: WarnFn | None = None,
    collections: Sequence[str] | None = None,
    bbox: tuple[float, float, float, float] | None = None,
    datetime: str | None = None,
    max_items: int | None = None,
) -> list[Strip]:
    """Every strip in a folder (recursive), a static STAC catalog, or a STAC API.

    ``collections``, ``bbox`` (lon/lat), ``datetime`` and ``max_items`` are passed to a
    STAC API search and ignored for local sources. Unparsable names and missing
    siblings are warned about (once each) through ``warn`` (default: this module's
    logger). The result is sorted by (date, name) and has one entry per DEM.
    """
    warn = warn or log.warning
    src = os.fspath(source)
    if is_url(src) and not src.endswith(".json"):
        strips = _discover_stac_api(src, collections, bbox, datetime, max_items, warn)
        where = src
    else:
        p = Path(src)
        if is_url(src):
            strips = _discover_stac_file(src, warn)
        elif p.is_file():
            if p.suffix.lower() != ".json":
                raise NoStripsError(f"{p}: neither a folder of strips nor a STAC catalog JSON")
            strips = _discover_stac_file(str(p), warn)
        elif p.is_dir():
            top = next((p / f for f in STAC_CATALOG_FILES if (p / f).is_file()), None)
            strips = _discover_stac_file(str(top), warn) if top else _discover_folder(p, warn)
        else:
            raise NoStripsError(f"{p}: no such folder or catalog")
        where = str(p)
    unique: dict[str, Strip] = {}
    for s in strips:
        unique.setdefault(s.dem, s)
    if not unique:
        raise NoStripsError(f"{where}: no ArcticDEM strips (*_dem.tif) found")
    return sorted(unique.values(), key=lambda s: (s.meta.date, s.meta.name))


def _discover_folder(folder: Path, warn: WarnFn) -> list[Strip]:
    out = []
    for dem in sorted(folder.rglob("*_dem.tif")):
        if not dem.is_file():
            continue
        try:
            meta = parse_strip_name(dem)
        except StripNameError as exc:
            warn(f"skipping {dem}: {exc}")
            continue
        stem = dem.name[: -len("_dem.tif")]
        siblings = {}
        for kind in ("bitmask", "matchtag"):
            sib = dem.with_name(f"{stem}_{kind}.tif")
            if sib.is_file():
                siblings[kind] = local_path(sib)
            else:
                siblings[kind] = None
                warn(f"{dem} has no _{kind}.tif; reading without it")
        out.append(Strip(local_path(dem), siblings["bitmask"], siblings["matchtag"], meta))
    return out


def _asset_href(item, keys: Iterable[str]) -> str | None:
    for k in keys:
        asset = item.assets.get(k)
        if asset is not None:
            href = asset.get_absolute_href() or asset.href
            return href if is_url(href) else os.path.normpath(href)
    return None


def _item_bounds_3413(item) -> tuple[float, float, float, float] | None:
    props = item.properties
    code = props.get("proj:code")
    epsg = props.get("proj:epsg")
    pb = props.get("proj:bbox")
    if pb is not None and (code == "EPSG:3413" or epsg == 3413):
        if len(pb) == 6:  # 3-D bbox
            pb = [pb[0], pb[1], pb[3], pb[4]]
        return tuple(float(v) for v in pb)  # type: ignore[return-value]
    if item.bbox:
        b = item.bbox
        if len(b) == 6:
            b = [b[0], b[1], b[3], b[4]]
        t = Transformer.from_crs("EPSG:4326", "EPSG:3413", always_xy=True)
        return tuple(float(v) for v in t.transform_bounds(*b, densify_pts=21))  # type: ignore[return-value]
    return None


def _strip_from_item(item, warn: WarnFn) -> Strip | None:
    dem = _asset_href(item, STAC_DEM_KEYS)
    if dem is None:
        warn(f"STAC item {item.id}: no 'dem' asset; skipped")
        return None
    try:
        meta = parse_strip_name(dem)
    except StripNameError:
        try:
            meta = parse_strip_name(item.id)
        except StripNameError as exc:
            warn(f"skipping STAC item {item.id}: {exc}")
            return None
    bitmask = _asset_href(item, STAC_BITMASK_KEYS)
    matchtag = _asset_href(item, STAC_MATCHTAG_KEYS)
    if bitmask is None:
        warn(f"{dem} has no _bitmask.tif (no 'mask' asset); reading without it")
    if matchtag is None:
        warn(f"{dem} has no _matchtag.tif (no 'matchtag' asset); reading without it")
    try:
        bounds = _item_bounds_3413(item)
    except Exception:  # bounds are an optimisation; the header gives them too
        bounds = None
    return Strip(dem, bitmask, matchtag, meta, bounds)


def _discover_stac_file(path: str, warn: WarnFn) -> list[Strip]:
    import pystac

    try:
        obj = pystac.read_file(path)
    except Exception as exc:
        raise StripReadError(f"{path}: not a readable STAC catalog ({describe_error(exc)})") from exc
    if isinstance(obj, pystac.Item):
        items = [obj]
    elif isinstance(obj, pystac.Catalog):
        items = _catalog_items(obj, warn)
    else:
        raise StripReadError(f"{path}: a STAC {type(obj).__name__}, not a catalog or collection")
    out = []
    for item in items:
        s = _safe_strip_from_item(item, warn)
        if s is not None:
            out.append(s)
    return out


def _catalog_items(catalog, warn: WarnFn, depth: int = 0):
    """The items of a static catalog and its children, one link at a time: an item or
    child that is missing or malformed is skipped with a warning naming its file, never
    aborting the others (``Catalog.get_items`` stops at the first bad one)."""
    root = catalog.get_root()
    for link in catalog.get_links("item"):
        try:
            yield link.resolve_stac_object(root=root).target
        except Exception as exc:  # JSON, schema or I/O errors vary
            warn(f"skipping STAC item {link.get_absolute_href() or link.href}: {describe_error(exc)}")
    if depth > 20:
        return
    for link in catalog.get_links("child"):
        try:
            child = link.resolve_stac_object(root=root).target
        except Exception as exc:
            warn(f"skipping STAC catalog {link.get_absolute_href() or link.href}: {describe_error(exc)}")
            continue
        yield from _catalog_items(child, warn, depth + 1)


def _safe_strip_from_item(item, warn: WarnFn) -> Strip | None:
    try:
        return _strip_from_item(item, warn)
    except Exception as exc:  # a malformed item costs that item only
        warn(f"skipping STAC item {getattr(item, 'id', '?')}: {describe_error(exc)}")
        return None


STAC_API_TIMEOUT_S = (10.0, 60.0)


def _discover_stac_api(url, collections, bbox, datetime, max_items, warn: WarnFn) -> list[Strip]:
    from pystac_client import Client

    try:  # a hung API must not hang the run: every request has a timeout (connect, read; s)
        client = Client.open(url, timeout=STAC_API_TIMEOUT_S)
    except Exception as exc:
        raise StripReadError(f"{url}: STAC API not reachable ({describe_error(exc)})") from exc
    search = client.search(
        collections=list(collections) if collections else None,
        bbox=list(bbox) if bbox else None,
        datetime=datetime,
        max_items=max_items,
    )
    out = []
    try:
        for item in search.items():
            s = _safe_strip_from_item(item, warn)
            if s is not None:
                out.append(s)
    except Exception as exc:  # timeouts and HTTP errors while paging
        raise StripReadError(f"{url}: STAC API search failed after {len(out)} items ({describe_error(exc)})") from exc
    return out


