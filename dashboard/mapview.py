"""The polar map: pydeck layers in EPSG:3413 coordinates on an ``OrthographicView``.

No base map and no internet: the view is a flat cartesian plane in EPSG:3413 metres
(``flipY`` off, so +y is up: the projection's own orientation with the pole at the centre
and the 45 °W meridian pointing down, the usual "north up" of polar stereographic maps).
Context layers: a sea background, Arctic land (Natural Earth, public domain), a graticule,
and the tile grid (the 100 km ArcticDEM mosaic tiles holding processed cells at low zoom,
the 2 km work cells in a focus box).

Scale: slumps are drawn as points for the whole selection (one ScatterplotLayer per colour
class, rows ``[x, y]`` in metres: ~20 bytes a slump) plus a pickable aggregate grid
(counts and volumes per 50 km square); outlines, centroids and cells are drawn only for a
focus box (at most :data:`POLYGON_LIMIT` slumps, from DuckDB). Large layer data is served
by URL through Streamlit's static file serving (``server.enableStaticServing``; files in
``dashboard/static/cache`` named by content hash) instead of being inlined into the page
messages; when static serving is off the data is inlined.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pydeck as pdk
import shapely
import streamlit as st

from data_products import grid, land, schema
from data_products.catalog import Catalog, Filters

from dashboard.state import DEFAULT_COLOR, _file_versions, open_catalog

STATIC_DIR = Path(__file__).resolve().parent / "static"
CACHE_DIR = STATIC_DIR / "cache"
POLYGON_LIMIT = 3_000
FOCUS_MAX_M = 300_000.0         # outlines and work cells only for boxes up to this size
#: up to this many selected slumps their points can be clicked at any zoom (each row then carries a
#: tooltip: ~35 bytes more per slump); above it, clicks on the 50 km aggregate squares focus the map
POINT_PICK_MAX = 20_000
GRID_MAX_M = 40_000.0           # every 2 km cell of the grid (processed or not) for boxes up to this size
AGG_CELL_M = 50_000.0
MAP_HEIGHT = 620
ARCTIC_BOX = (-3_600_000.0, -3_600_000.0, 3_600_000.0, 3_600_000.0)

#: Class edges per colouring metric (m³, m³/yr, r); 7 classes plus "no value".
BINS: dict[str, list[float]] = {
    "volume_m3": [1e3, 3e3, 1e4, 3e4, 1e5, 3e5],
    "volume_rate_m3_yr": [3e2, 1e3, 3e3, 1e4, 3e4, 1e5],
    "r_temperature": [-0.5, 0.0, 0.3, 0.5, 0.7, 0.9],
}
_SEQ = [(68, 1, 84), (70, 50, 126), (54, 92, 141), (39, 127, 142), (31, 161, 135), (74, 193, 109), (253, 231, 37)]
_DIV = [(33, 102, 172), (103, 169, 207), (209, 229, 240), (253, 219, 199), (239, 138, 98), (214, 96, 77),
        (178, 24, 43)]
NAN_COLOR = (150, 150, 150)
SEA = (214, 228, 238)
LAND = (236, 232, 222)


def palette(metric: str) -> list[tuple[int, int, int]]:
    return _DIV if metric == "r_temperature" else _SEQ


def classify(values: np.ndarray, metric: str) -> np.ndarray:
    """Class index 0..6 per value; -1 for missing values."""
    v = np.asarray(values, dtype=float)
    k = np.searchsorted(np.asarray(BINS[metric]), v, side="right")
    return np.where(np.isfinite(v), k, -1)


def class_labels(metric: str) -> list[str]:
    e = BINS[metric]
    fmt = (lambda x: f"{x:g}") if metric == "r_temperature" else (lambda x: f"{x:,.0f}")
    return [f"< {fmt(e[0])}"] + [f"{fmt(a)} – {fmt(b)}" for a, b in zip(e[:-1], e[1:])] + [f"≥ {fmt(e[-1])}"]


def point_radius_px(cls: int, metric: str) -> float:
    """A point's radius (pixels) for colour class ``cls``: growing with the class for volumes
    and rates (size and colour say the same), constant for r (a signed measure)."""
    if metric == "r_temperature" or cls < 0:
        return 2.2
    return 1.6 + 0.45 * cls


def legend_html(metric: str, label: str) -> str:
    def dot(c, d: float) -> str:
        return (f"<span style='display:inline-block;width:{d:.0f}px;height:{d:.0f}px;border-radius:50%;"
                f"background:rgb{c};margin-right:4px;vertical-align:middle'></span>")

    sw = "".join(f"<span style='display:inline-block;margin-right:10px'>"
                 f"{dot(c, 2.6 * point_radius_px(k, metric))}{t}</span>"
                 for k, (c, t) in enumerate(zip(palette(metric), class_labels(metric))))
    sw += (f"<span style='display:inline-block'><span style='display:inline-block;width:12px;height:12px;"
           f"border-radius:6px;background:rgb{NAN_COLOR};margin-right:4px;vertical-align:middle'></span>no value</span>")
    return f"<div style='font-size:0.8rem'><b>{label}</b>: {sw}</div>"


# --------------------------------------------------------------------------- static serving
def static_serving() -> bool:
    try:
        return bool(st.get_option("server.enableStaticServing"))
    except RuntimeError:  # the option is unknown outside a Streamlit server
        return False


def _base_path() -> str:
    base = (st.get_option("server.baseUrlPath") or "").strip("/")
    return f"/{base}" if base else ""


def publish(payload: str, stem: str):
    """Serve ``payload`` (JSON text) by URL when static serving is on; else return the parsed data.

    Files are named by content hash, so an unchanged selection reuses the browser's copy.
    """
    if static_serving():
        data = payload.encode()
        name = f"{stem}-{hashlib.sha1(data).hexdigest()[:16]}.json"
        path = CACHE_DIR / name
        try:
            if not path.exists():
                CACHE_DIR.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp")
                tmp.write_bytes(data)
                tmp.replace(path)
                _prune()
            return f"{_base_path()}/app/static/cache/{name}"
        except OSError:
            pass  # read-only installation: inline instead
    return json.loads(payload)


def _prune(max_files: int = 400, max_age_s: float = 6 * 3600) -> None:
    files = sorted(CACHE_DIR.glob("*.json"), key=lambda p: p.stat().st_mtime)
    now = time.time()
    for i, p in enumerate(files):
        if len(files) - i > max_files or now - p.stat().st_mtime > max_age_s:
            p.unlink(missing_ok=True)


def _dumps(obj) -> str:
    return json.dumps(obj, separators=(",", ":"))


# --------------------------------------------------------------------------- views
def view_state(box: tuple[float, float, float, float], width_px: int = 900, height_px: int = MAP_HEIGHT) -> dict:
    """Orthographic view state (target in EPSG:3413 m, zoom: log2 pixels per metre) showing ``box``."""
    xmin, ymin, xmax, ymax = box
    w = max(xmax - xmin, 200.0)
    h = max(ymax - ymin, 200.0)
    zoom = math.log2(min(width_px / w, height_px / h) * 0.9)
    return {"target": [(xmin + xmax) / 2, (ymin + ymax) / 2, 0], "zoom": zoom, "minZoom": -14, "maxZoom": 3}


def visible_box(box, width_px: int = 900, height_px: int = MAP_HEIGHT) -> tuple[float, float, float, float]:
    """The EPSG:3413 box the initial view shows for ``box`` (the view's aspect and margin)."""
    vs = view_state(box, width_px, height_px)
    half_w = width_px / 2 / 2 ** vs["zoom"]
    half_h = height_px / 2 / 2 ** vs["zoom"]
    cx, cy = vs["target"][:2]
    return (cx - half_w, cy - half_h, cx + half_w, cy + half_h)


def box_size(box) -> float:
    return max(box[2] - box[0], box[3] - box[1])


# --------------------------------------------------------------------------- layers
@st.cache_data(show_spinner=False)
def _context_payloads() -> dict[str, str]:
    sea = [[[-5e6, -5e6], [5e6, -5e6], [5e6, 5e6], [-5e6, 5e6]]]
    grat = land.graticule()
    return {"sea": _dumps(sea), "land": _dumps(land.land_polygons()),
            "graticule": _dumps([{"path": g["path"]} for g in grat])}


#: what the graticule shows, said in the map's caption: a deck.gl TextLayer for its labels
#: builds a font atlas in the browser, which delayed the first paint by ~0.3 s (software WebGL)
GRATICULE_NOTE = "graticule: parallels every 10° from 50° N, meridians every 30°"


def context_layers() -> list[pdk.Layer]:
    """Sea, land with its coast, and the graticule (no base-map tiles: it draws offline)."""
    p = _context_payloads()
    return [
        pdk.Layer("SolidPolygonLayer", id="sea", data=json.loads(p["sea"]), get_polygon="-",
                  get_fill_color=list(SEA), pickable=False),
        pdk.Layer("PolygonLayer", id="land", data=publish(p["land"], "land"), get_polygon="-",
                  get_fill_color=list(LAND), get_line_color=[150, 150, 150], line_width_min_pixels=0.6,
                  stroked=True, filled=True, pickable=False),
        pdk.Layer("PathLayer", id="graticule", data=publish(p["graticule"], "graticule"), get_path="path",
                  get_color=[120, 140, 160, 110], width_min_pixels=0.7, pickable=False),
    ]


def _catalog(path: str, version: tuple) -> Catalog:
    return open_catalog(path, version)


@st.cache_data(max_entries=16, show_spinner=False)
def _points_payloads(path: str, version: tuple, f: Filters, metric: str) -> tuple[int, list[tuple[int, str]]]:
    """Per colour class, the JSON rows ``[x, y]`` (EPSG:3413 m, rounded to 1 m) of the selected slumps."""
    pts = _catalog(path, version).points(f)
    if pts.empty:
        return 0, []
    k = classify(pts[metric].to_numpy(), metric)
    xy = np.c_[np.round(pts.x.to_numpy()), np.round(pts.y.to_numpy())].astype(np.int64)
    if len(pts) <= POINT_PICK_MAX:  # rows that can be clicked: {"p": [x, y], "t": tooltip}
        tip = "slump (click to select the nearest)"
        return len(pts), [(cls, _dumps([{"p": r, "t": tip} for r in xy[k == cls].tolist()]))
                          for cls in [-1, *range(7)] if (k == cls).any()]
    return len(pts), [(cls, _dumps(xy[k == cls].tolist())) for cls in [-1, *range(7)] if (k == cls).any()]


def point_layers(payloads: list[tuple[int, str]], metric: str) -> list[pdk.Layer]:
    """All selected slumps as points, one layer per colour class; data by URL."""
    cols = palette(metric)
    out = []
    for cls, text in payloads:
        clickable = text.startswith("[{")  # small selections: rows with a tooltip (see _points_payloads)
        out.append(pdk.Layer("ScatterplotLayer", id=f"points-{cls + 1}", data=publish(text, "pts"),
                             get_position="p" if clickable else "-",
                             get_fill_color=list(NAN_COLOR if cls < 0 else cols[cls]) + [230],
                             get_radius=point_radius_px(cls, metric), radius_units="pixels", radius_min_pixels=1.6,
                             stroked=False, pickable=clickable))
    return out


def clicked_xy(obj) -> tuple[float, float] | None:
    """EPSG:3413 (x, y) of a clicked point row (``[x, y]``, as the point layers hold them: a
    list, or a dict keyed "0"/"1" once serialised), or None."""
    try:
        if isinstance(obj, dict):
            obj = obj["p"] if "p" in obj else [obj.get("0", obj.get(0)), obj.get("1", obj.get(1))]
        x, y = float(obj[0]), float(obj[1])
    except (TypeError, ValueError, IndexError, KeyError):
        return None
    return (x, y) if math.isfinite(x) and math.isfinite(y) else None


@st.cache_data(max_entries=16, show_spinner=False)
def _aggregate_payload(path: str, version: tuple, f: Filters, cell_m: float = AGG_CELL_M) -> tuple[int, str]:
    """Counts and volumes per ``cell_m`` square as JSON rows for a PolygonLayer."""
    agg = _catalog(path, version).grid_aggregate(f, cell_m)
    if agg.empty:
        return 0, "[]"
    n = agg.n.to_numpy(float)
    alpha = np.clip(25 + 50 * np.log10(n) / max(1.0, np.log10(n.max())), 25, 90).astype(int)
    rows = []
    for (x0, y0, cnt, vol, a) in zip(agg.x0, agg.y0, agg.n, agg.volume_m3, alpha):
        x0, y0 = int(x0), int(y0)
        c = int(cell_m)
        rows.append({"polygon": [[x0, y0], [x0 + c, y0], [x0 + c, y0 + c], [x0, y0 + c]], "x0": x0, "y0": y0,
                     "c": [20, 60, 120, int(a)], "t": f"{int(cnt):,} slumps, {vol:,.0f} m³ (click to zoom)"})
    return len(rows), _dumps(rows)


def aggregate_layer(payload: str) -> pdk.Layer:
    """Counts and volumes per square, pickable (a click focuses on the square); data by URL."""
    return pdk.Layer("PolygonLayer", id="aggregate", data=publish(payload, "agg"), get_polygon="polygon",
                     get_fill_color="c", get_line_color=[20, 60, 120, 60], line_width_min_pixels=0.5, stroked=True,
                     filled=True, pickable=True, auto_highlight=True)


@st.cache_data(max_entries=4, show_spinner=False)
def _mosaic_payload(path: str, version: tuple) -> str | None:
    """Outlines of the 100 km ArcticDEM mosaic tiles that hold processed cells, as JSON paths."""
    tiles = _catalog(path, version).tiles(limit=2_000_000)
    if tiles.empty:
        return None
    t = 100_000.0
    x0 = np.floor((tiles.x0.to_numpy() + 4e6) / t) * t - 4e6
    y0 = np.floor((tiles.y0.to_numpy() + 4e6) / t) * t - 4e6
    keys = pd.DataFrame({"x0": x0.astype(int), "y0": y0.astype(int)}).drop_duplicates()
    t = int(t)
    return _dumps([{"path": [[a, b], [a + t, b], [a + t, b + t], [a, b + t], [a, b]]} for a, b in zip(keys.x0, keys.y0)])


def mosaic_tiles_layer(payload: str) -> pdk.Layer:
    return pdk.Layer("PathLayer", id="mosaic-tiles", data=publish(payload, "mosaic"), get_path="path",
                     get_color=[110, 110, 110, 70], width_min_pixels=0.5, pickable=False)


_STATUS_COLORS = {"ok": [60, 130, 60, 160], "too_few_dems": [200, 150, 30, 200], "no_data": [150, 150, 150, 160],
                  "failed": [200, 40, 40, 220]}


def cell_layer(tiles: pd.DataFrame, box=None, picked=()) -> pdk.Layer | None:
    """2 km work cells, pickable (tooltip: id and status; a click picks or unpicks the cell for
    reprocessing). The processed cells in ``tiles`` are outlined by status; when the visible
    ``box`` is at most :data:`GRID_MAX_M` wide, every cell of the grid in it is drawn, so that
    cells never processed can be picked too. Picked cells are filled blue."""
    picked = set(picked)
    rows = {}
    if box is not None and box_size(box) <= GRID_MAX_M:
        for cell in grid.cells_in_bounds(box):
            a, b, c, d = cell.bounds
            rows[cell.id] = {"polygon": [[a, b], [c, b], [c, d], [a, d]], "tile": cell.id, "c": [120, 120, 120, 90],
                             "t": f"cell {cell.id}: not processed (click to pick)"}
    for tid, s_, n, e, a, b, c, d in zip(tiles.tile_id, tiles.status, tiles.n_slumps, tiles.error,
                                         tiles.x0, tiles.y0, tiles.x1, tiles.y1):
        rows[tid] = {"polygon": [[a, b], [c, b], [c, d], [a, d]], "tile": tid,
                     "c": _STATUS_COLORS.get(s_, [90, 90, 90, 160]),
                     "t": f"cell {tid}: {s_}, {int(n or 0)} slumps" + (f" — {e}" if isinstance(e, str) and e else "")
                          + " (click to pick)"}
    if not rows:
        return None
    for tid, r in rows.items():
        r["f"] = [40, 110, 230, 90] if tid in picked else [0, 0, 0, 0]
        if tid in picked:
            r["t"] = r["t"].replace("(click to pick)", "(picked; click to unpick)")
    return pdk.Layer("PolygonLayer", id="cells", data=publish(_dumps(list(rows.values())), "cells"),
                     get_polygon="polygon", get_line_color="c", filled=True, get_fill_color="f", stroked=True,
                     line_width_min_pixels=1, pickable=True, auto_highlight=True)


def polygon_layers(polys: pd.DataFrame, metric: str) -> list[pdk.Layer]:
    """Outlines and centroids of the slumps in the focus box, pickable (a click selects the slump)."""
    if polys.empty:
        return []
    geoms = shapely.from_wkb([bytes(b) for b in polys.wkb])
    k = classify(polys[metric].to_numpy(), metric)
    cols = palette(metric)
    shapes, dots = [], []
    first = polys["first_change"] if "first_change" in polys else pd.Series([None] * len(polys))
    last = polys["last_change"] if "last_change" in polys else pd.Series([None] * len(polys))
    region = polys["region"] if "region" in polys else pd.Series([""] * len(polys))
    for g, rid, vol, rate, r, area, cls, reg, d0, d1 in zip(geoms, polys.rts_id, polys.volume_m3,
                                                            polys.volume_rate_m3_yr, polys.r_temperature,
                                                            polys.area_m2, k, region, first, last):
        if g is None or g.is_empty:
            continue
        poly = g if g.geom_type == "Polygon" else max(g.geoms, key=lambda q: q.area)
        color = list(NAN_COLOR if cls < 0 else cols[cls])
        dates = f", changed {str(d0)[:10]} – {str(d1)[:10]}" if d0 is not None and not pd.isna(d0) else ""
        tip = (f"{rid} ({reg}): {vol:,.0f} m³, {rate:,.0f} m³/yr, area {area / 1e4:.2f} ha{dates}, "
               f"r {'–' if r is None or not np.isfinite(r) else f'{r:.2f}'} (click to select)")
        ring = np.round(np.asarray(poly.exterior.coords)[:, :2], 1).tolist()
        shapes.append({"polygon": ring, "id": rid, "c": color + [170], "t": tip})
        c = poly.centroid
        dots.append({"position": [round(c.x, 1), round(c.y, 1)], "id": rid, "c": color + [255], "t": tip})
    return [
        pdk.Layer("PolygonLayer", id="outlines", data=publish(_dumps(shapes), "outlines"), get_polygon="polygon",
                  get_fill_color="c", get_line_color=[30, 30, 30, 220], line_width_min_pixels=1, stroked=True,
                  filled=True, pickable=True, auto_highlight=True),
        pdk.Layer("ScatterplotLayer", id="centroids", data=publish(_dumps(dots), "centroids"),
                  get_position="position", get_fill_color="c", get_line_color=[20, 20, 20], stroked=True,
                  line_width_min_pixels=0.5, radius_units="pixels", get_radius=4, pickable=True, auto_highlight=True),
    ]


def highlight_layer(wkb: bytes | None) -> pdk.Layer | None:
    if not wkb:
        return None
    g = shapely.from_wkb(wkb)
    poly = g if g.geom_type == "Polygon" else max(g.geoms, key=lambda q: q.area)
    return pdk.Layer("PathLayer", id="selected", data=[{"path": np.asarray(poly.exterior.coords)[:, :2].tolist()}],
                     get_path="path", get_color=[230, 20, 20], width_min_pixels=3, pickable=False)


#: colours of the reference inventories' layers, in the order they are listed
REFERENCE_COLORS = [(230, 97, 1), (94, 60, 153), (27, 158, 119), (217, 95, 2), (231, 41, 138), (102, 166, 30),
                    (166, 118, 29), (31, 120, 180)]


def reference_names(products: Path) -> list[str]:
    """The reference inventories converted into ``PRODUCTS/reference/`` (``rts dashboard --reference``)."""
    folder = Path(products) / schema.REFERENCE_DIR
    return sorted(p.stem for p in folder.glob("*.parquet") if not p.name.startswith(".")) if folder.is_dir() else []


@st.cache_data(max_entries=32, show_spinner=False)
def _reference_payload(path: str, mtime: float) -> tuple[str, list]:
    """(centroids JSON ``[x, y]`` rows, outlines as (bounds, ring) pairs) of one reference file."""
    import geopandas as gpd

    gdf = gpd.read_parquet(path)
    geoms = gdf.geometry.to_numpy()
    cents = shapely.centroid(geoms)
    xy = np.c_[shapely.get_x(cents), shapely.get_y(cents)]
    rings = []
    for g in geoms:
        if g is None or g.is_empty or g.geom_type not in ("Polygon", "MultiPolygon"):
            continue
        poly = g if g.geom_type == "Polygon" else max(g.geoms, key=lambda q: q.area)
        rings.append((poly.bounds, np.round(np.asarray(poly.exterior.coords)[:, :2], 1).tolist()))
    return _dumps(np.round(xy[np.isfinite(xy).all(axis=1)]).astype(np.int64).tolist()), rings


def reference_layers(products: Path, names: list[str], box, focus: bool) -> list[pdk.Layer]:
    """Each chosen reference inventory as hollow circles at its features' centroids (at least
    6 px, so that they show at every scale) and, in a focus box, its outlines."""
    layers = []
    all_names = reference_names(products)
    for name in names:
        if name not in all_names:
            continue
        path = Path(products) / schema.REFERENCE_DIR / f"{name}.parquet"
        color = list(REFERENCE_COLORS[all_names.index(name) % len(REFERENCE_COLORS)])
        pts, rings = _reference_payload(str(path), path.stat().st_mtime)
        layers.append(pdk.Layer("ScatterplotLayer", id=f"ref-{name}", data=publish(pts, "ref"), get_position="-",
                                get_radius=6, radius_units="pixels", stroked=True, filled=False,
                                get_line_color=color + [230], line_width_min_pixels=1.5, pickable=False))
        if focus:
            x0, y0, x1, y1 = box
            vis = [{"polygon": r} for b, r in rings if b[2] >= x0 and b[0] <= x1 and b[3] >= y0 and b[1] <= y1]
            if vis:
                layers.append(pdk.Layer("PolygonLayer", id=f"ref-outlines-{name}", data=publish(_dumps(vis), "refo"),
                                        get_polygon="polygon", filled=False, stroked=True,
                                        get_line_color=color + [255], line_width_min_pixels=1.5, pickable=False))
    return layers


def build_deck(cat: Catalog, f: Filters, metric: str, box, selected_wkb: bytes | None = None,
               picked: list[str] | tuple = (), references: list[str] | tuple = ()) -> tuple[pdk.Deck, dict]:
    """The map for filters ``f`` viewing ``box``; returns the deck and facts (counts, timings, focus)."""
    t0 = time.perf_counter()
    key = (str(cat.products), cat.version())
    n_points, pts = _points_payloads(*key, f, metric)
    focus = box_size(box) <= FOCUS_MAX_M
    layers: list = context_layers()
    mosaic = _mosaic_payload(*key)
    if mosaic:
        layers.append(mosaic_tiles_layer(mosaic))
    n_agg = 0
    if not focus:
        n_agg, agg = _aggregate_payload(*key, f)
        if n_agg:
            layers.append(aggregate_layer(agg))
    layers += point_layers(pts, metric)
    n_polys = 0
    if focus:
        vis = visible_box(box)
        cells = cat.tiles(bbox=vis, limit=5_000)
        c = cell_layer(cells, vis, picked)
        if c is not None:
            layers.append(c)
        polys = cat.polygons(f, bbox=vis, limit=POLYGON_LIMIT)
        n_polys = len(polys)
        layers += polygon_layers(polys, metric)
    layers += reference_layers(cat.products, list(references), visible_box(box), focus)
    h = highlight_layer(selected_wkb)
    if h is not None:
        layers.append(h)
    deck = pdk.Deck(
        layers=layers,
        views=[pdk.View(type="OrthographicView", controller=True, flipY=False, id="polar")],
        initial_view_state=view_state(box),
        map_style=None,
        map_provider=None,
        tooltip={"text": "{t}"},
    )
    facts = {"n_points": n_points, "n_polygons": n_polys, "focus": focus, "n_cells_agg": n_agg,
             "build_s": time.perf_counter() - t0}
    return deck, facts


#: cleared while :func:`prewarm` runs (set: nothing being prepared)
PREWARM_IDLE = threading.Event()
PREWARM_IDLE.set()


def prewarm(products: Path) -> float:
    """Build the Map page's default view (every slump over the Arctic, coloured by volume)
    into the caches: what the first visitor after a start would otherwise wait for (opening
    the catalog, the point and aggregate payloads). Returns the seconds it took. A page that
    runs meanwhile waits for it (:func:`await_prewarm`) rather than computing the same twice."""
    PREWARM_IDLE.clear()
    try:
        t0 = time.perf_counter()
        cat = open_catalog(str(products), _file_versions(products))
        f = Filters().validate()  # what a visit without URL parameters and untouched filters asks for
        cat.totals(f)
        build_deck(cat, f, DEFAULT_COLOR, ARCTIC_BOX)
        return time.perf_counter() - t0
    finally:
        PREWARM_IDLE.set()


_PREWARM_GAVE_UP = threading.Event()  # a wait timed out once: no page waits again


def await_prewarm(timeout_s: float = 30.0) -> None:
    """Once per session, wait (at most ``timeout_s``, under a spinner) for a :func:`prewarm`
    in progress to end; after one wait has timed out, pages no longer wait."""
    if st.session_state.get("_prewarm_waited") or PREWARM_IDLE.is_set() or _PREWARM_GAVE_UP.is_set():
        st.session_state["_prewarm_waited"] = True
        return
    with st.spinner("Preparing the map (the server has just started)…"):
        if not PREWARM_IDLE.wait(timeout_s):
            _PREWARM_GAVE_UP.set()
    st.session_state["_prewarm_waited"] = True
