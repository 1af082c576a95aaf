"""Slump page: one slump's dh and t2 images with its outline, the scar's growth season by
season (a slider over thaw seasons), yearly volume against summer temperature, the
volume-temperature scatter with r and p, and its numbers; previous/next slump of the current
selection. Without a selected slump, the largest of the selection to pick from."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import shapely
import streamlit as st

from dashboard import state
from dashboard.charts import volume_against_temperature
from data_products import schema, timebase
from data_products.catalog import QueryError, check_rts_id
from data_products.grid import TileIdError
from data_products.store import ProductsStore

cat = state.require_catalog()
ss = st.session_state
f = state.current_filters()
PICK_LIST = 25
DROP_M = -1.0  # a pixel counts as dropped at dh <= this (m): candidates.max_dh_m's default

st.title("Slump")
sel = state.selected_slump()
typed = st.text_input("Slump id", value=sel or "", placeholder="RTS_-0245678_+0012345",
                      help="Pick one on the Map page, or type its id.", max_chars=80)
if typed.strip() and typed.strip() != sel:
    try:
        sel = check_rts_id(typed)
        state.select_slump(sel)
    except QueryError as exc:
        st.error(state.plain(f"{exc}. Nothing changed."))
if not sel:
    st.info("No slump selected: pick one of the largest slumps of the current selection below, click one on the "
            "Map page (in a focus box), or type an id.")
    top = cat.table(f, limit=PICK_LIST, order_by="volume_m3")
    if top.empty:
        st.warning(f"The current selection ({state.describe(f)}) holds no slump.")
        st.stop()
    show = top[["rts_id", "region", "volume_m3", "area_m2", "volume_rate_m3_yr", "r_temperature", "first_change",
                "last_change"]]
    picked = st.dataframe(show, hide_index=True, width="stretch", on_select="rerun", selection_mode="single-row",
                          key="slump_pick")
    rows = picked.selection.rows if picked is not None else []
    if rows:
        state.select_slump(show.iloc[rows[0]].rts_id)
        st.rerun()
    st.stop()

row = cat.slump(sel)
if row is None:
    st.warning(state.plain(f"{sel} is not in this inventory (it may have been removed by a rerun)."))
    st.stop()
state.filters_to_query(state.current_filters(), state.color_by(), sel)

geom = shapely.from_wkb(row["wkb"])
st.subheader(f"{row['rts_id']} — {row['region']}")

# previous / next slump of the current selection, by volume
order = cat.table(f, limit=2_000, order_by="volume_m3").rts_id.tolist()
if sel in order:
    i = order.index(sel)
    nav = st.columns([1, 1, 4])
    if nav[0].button("← Previous", disabled=i == 0, key="prev_slump", help="the next larger slump of the selection"):
        state.select_slump(order[i - 1])
        st.rerun()
    if nav[1].button("Next →", disabled=i >= len(order) - 1, key="next_slump",
                     help="the next smaller slump of the selection"):
        state.select_slump(order[i + 1])
        st.rerun()
    nav[2].caption(f"{i + 1} of {len(order):,} in the selection, largest volume first")


def _num(v, fmt="{:,.0f}", empty="–"):
    return empty if v is None or (isinstance(v, float) and not np.isfinite(v)) else fmt.format(v)


cols = st.columns(6)
cols[0].metric("Volume lost (m³)", _num(row["volume_m3"]), help=f"± {_num(row['volume_sigma_m3'])} m³ (1σ)")
cols[1].metric("Area (ha)", _num(row["area_m2"] / 1e4, "{:.2f}"))
cols[2].metric("Rate (m³/yr)", _num(row["volume_rate_m3_yr"]))
cols[3].metric("Carbon (kg C/yr)", _num(row.get("carbon_kg_yr")))
cols[4].metric("r with summer T", _num(row.get("r_temperature"), "{:.2f}"),
               help=row.get("temperature_note") or None)
cols[5].metric("p", _num(row.get("p_temperature"), "{:.3f}"))

# --------------------------------------------------------------------------- images
st.markdown("#### dh and t2 around the slump")


def _read_window(path, bounds, max_px: int = 400):
    import rasterio
    from rasterio.windows import from_bounds

    with rasterio.open(path) as src:
        win = from_bounds(*bounds, transform=src.transform).round_offsets().round_lengths()
        win = win.intersection(rasterio.windows.Window(0, 0, src.width, src.height))
        step = max(1, int(max(win.width, win.height) // max_px))
        a = src.read(1, window=win, out_shape=(max(1, int(win.height // step)), max(1, int(win.width // step))),
                     masked=True).astype(float).filled(np.nan)
        tr = src.window_transform(win)
    x = tr.c + (np.arange(a.shape[1]) + 0.5) * (win.width / a.shape[1]) * tr.a
    y = tr.f + (np.arange(a.shape[0]) + 0.5) * (win.height / a.shape[0]) * tr.e
    return a, x, y


pad = max(100.0, 0.6 * max(geom.bounds[2] - geom.bounds[0], geom.bounds[3] - geom.bounds[1]))
bounds = (geom.bounds[0] - pad, geom.bounds[1] - pad, geom.bounds[2] + pad, geom.bounds[3] + pad)
poly = geom if geom.geom_type == "Polygon" else max(geom.geoms, key=lambda q: q.area)
ox, oy = np.asarray(poly.exterior.coords)[:, 0], np.asarray(poly.exterior.coords)[:, 1]
def matched_outlines(matches: pd.DataFrame) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(label, x, y) of the published-inventory features matched to this slump, where the
    inventory is among the dashboard's reference layers (``rts dashboard --reference``)."""
    import geopandas as gpd

    folder = cat.products / schema.REFERENCE_DIR
    out = []
    if matches.empty or not folder.is_dir():
        return out
    for ref, rows in matches.groupby("reference"):
        stem = Path(str(ref)).stem
        for path in sorted(folder.glob("*.parquet")):
            if not (path.stem == stem or path.stem.endswith(f"__{stem}")):
                continue
            try:
                gdf = gpd.read_parquet(path, columns=["source", "row", "geometry"])
            except (OSError, ValueError):
                continue
            for g in gdf[gdf.row.isin(rows.reference_row.astype(int))].geometry:
                if g is not None and g.geom_type in ("Polygon", "MultiPolygon"):
                    q = g if g.geom_type == "Polygon" else max(g.geoms, key=lambda a: a.area)
                    xy = np.asarray(q.exterior.coords)
                    out.append((stem, xy[:, 0], xy[:, 1]))
            break
    return out


matches = cat.matches(sel)
overlays = matched_outlines(matches)
img_cols = st.columns(2)
try:
    rasters = {name: cat.tile_raster(row["tile_id"], name) for name in ("dh", "t2")}
except (TileIdError, QueryError) as exc:
    rasters = {}
    st.error(f"The slump's cell id is not valid: {exc}")
windows = {}
for name in ("dh", "t2"):
    if rasters.get(name) is not None:
        try:
            windows[name] = _read_window(rasters[name], bounds)
        except Exception as exc:  # noqa: BLE001 - any unreadable raster is reported on the page
            windows[name] = exc
dropped = None
if isinstance(windows.get("dh"), tuple):
    dropped = windows["dh"][0] <= DROP_M  # t2 means something only where the ground dropped
for col, name in zip(img_cols, ("dh", "t2")):
    if name not in windows:
        col.info(f"No {name}.tif for cell {row['tile_id']} in the products folder.")
        continue
    if isinstance(windows[name], Exception):
        col.error(f"Cannot read {name}.tif: {windows[name]}")
        continue
    a, x, y = windows[name]
    if name == "t2":
        a = np.where(a < -9000, np.nan, a)
        if dropped is not None and dropped.shape == a.shape:
            a = np.where(dropped, a, np.nan)
        z = a / 365.25 + timebase.EPOCH.year  # days since the epoch (1 January) -> decimal year
        title, scale, zr, unit = (f"t2: first observation after the drop (where dh ≤ {DROP_M:g} m)", "Turbo",
                                  (None, None), "year")
    else:
        z = a
        title, scale, zr, unit = "dh: elevation change", "RdBu", (-6, 6), "m"
    fig = go.Figure(go.Heatmap(z=z, x=x, y=y, colorscale=scale, zmin=zr[0], zmax=zr[1],
                               colorbar=dict(title=unit), hovertemplate="x %{x:.0f} m<br>y %{y:.0f} m<br>%{z:.2f}"))
    fig.add_trace(go.Scatter(x=ox, y=oy, mode="lines", line=dict(color="black", width=2), name="outline",
                             hoverinfo="skip"))
    for label, mx, my in overlays:  # matched features of published inventories
        fig.add_trace(go.Scatter(x=mx, y=my, mode="lines", line=dict(color="#e66101", width=2, dash="dash"),
                                 name=label, hovertemplate=f"{label}<extra></extra>"))
    fig.update_layout(title=title, height=380, margin=dict(l=0, r=0, t=40, b=0), showlegend=False,
                      xaxis=dict(title="x (EPSG:3413 m)"), yaxis=dict(title="y (m)", scaleanchor="x"))
    col.plotly_chart(fig, width="stretch", key=f"img_{name}")

# --------------------------------------------------------------------------- growth by season
if isinstance(windows.get("t2"), tuple) and dropped is not None and dropped.shape == windows["t2"][0].shape:
    t2, x, y = windows["t2"]
    t2 = np.where(dropped & (t2 > -9000), t2, np.nan)
    years_seen = np.floor(t2[np.isfinite(t2)] / 365.25 + 2000.0).astype(int)
    if years_seen.size:
        seasons = list(range(int(years_seen.min()), int(years_seen.max()) + 1))
        st.markdown("#### The scar season by season")
        year = seasons[-1] if len(seasons) == 1 else st.select_slider(
            "Scar by the end of the thaw season of", options=seasons, value=seasons[-1], key="w_season")
        (m1, d1) = schema.THAW_SEASON[1]
        end = (np.datetime64(f"{year}-{m1:02d}-{d1:02d}") - np.datetime64(schema.DATE_EPOCH)).astype(int)
        grown = np.where(t2 <= end, t2 / 365.25 + 2000.0, np.nan)
        px_m2 = abs((x[1] - x[0]) * (y[1] - y[0])) if len(x) > 1 and len(y) > 1 else float("nan")
        share = np.isfinite(grown).sum() / max(np.isfinite(t2).sum(), 1)
        fig = go.Figure(go.Heatmap(z=grown, x=x, y=y, colorscale="Turbo", zmin=seasons[0], zmax=seasons[-1] + 1,
                                   colorbar=dict(title="year"), hovertemplate="dropped in %{z:.1f}<extra></extra>"))
        fig.add_trace(go.Scatter(x=ox, y=oy, mode="lines", line=dict(color="black", width=1.5), hoverinfo="skip"))
        fig.update_layout(title=f"ground dropped by the end of the {year} thaw season: "
                                f"{np.isfinite(grown).sum() * px_m2 / 1e4:.2f} ha ({100 * share:.0f} % of the scar)",
                          height=420, margin=dict(l=0, r=0, t=40, b=0), showlegend=False,
                          xaxis=dict(title="x (EPSG:3413 m)"), yaxis=dict(title="y (m)", scaleanchor="x"))
        st.plotly_chart(fig, width="stretch", key="season_map")

# --------------------------------------------------------------------------- time series
ts = cat.timeseries(sel)
st.markdown("#### Yearly volume against summer temperature")
if ts.empty:
    st.info("No yearly volumes for this slump.")
else:
    fig = volume_against_temperature(ts.year, ts.volume_m3, ts.volume_sigma_m3, ts.summer_t2m_c,
                                     volume_label="volume lost (m³)", volume_axis="volume (m³)",
                                     temperature_label="summer 2 m temperature (°C)")
    st.plotly_chart(fig, width="stretch", key="yearly")

    good = ts.dropna(subset=["summer_t2m_c"])
    if len(good) >= 2:
        sc = go.Figure(go.Scatter(x=good.summer_t2m_c, y=good.volume_m3, mode="markers+text", text=good.year,
                                  textposition="top center", marker=dict(size=9, color="#01665e"), name="years"))
        if len(good) >= 2 and good.summer_t2m_c.std() > 0:
            k, b = np.polyfit(good.summer_t2m_c, good.volume_m3, 1)
            xs = np.linspace(good.summer_t2m_c.min(), good.summer_t2m_c.max(), 10)
            sc.add_trace(go.Scatter(x=xs, y=k * xs + b, mode="lines", line=dict(dash="dash"), name="least squares"))
        r, p = row.get("r_temperature"), row.get("p_temperature")
        label = (f"r = {r:.2f}, p = {p:.3f}" if r is not None and np.isfinite(r) and p is not None and np.isfinite(p)
                 else f"r not computed ({row.get('temperature_note') or 'fewer than 3 years'})")
        sc.update_layout(title=label, height=340, margin=dict(l=0, r=0, t=40, b=0), showlegend=False,
                         xaxis=dict(title="summer 2 m temperature (°C)"), yaxis=dict(title="volume lost (m³)"))
        st.plotly_chart(sc, width="stretch", key="scatter")

# --------------------------------------------------------------------------- strips
st.markdown("#### The strips that saw it")


try:
    meta = json.loads(cat.path(ProductsStore.tile_key(row["tile_id"], schema.CELL_META)).read_text())
except (QueryError, OSError, ValueError) as exc:
    meta = None
    st.caption(f"No readable cell.json for cell {row['tile_id']}: {state.plain(exc)}")
if meta:
    first_c, last_c = str(row.get("first_change") or "")[:10], str(row.get("last_change") or "")[:10]
    strips = pd.DataFrame([{
        "date": c.get("date"), "sensor": c.get("sensor") or "", "strip": c.get("strip"),
        "used": bool(c.get("used")), "reason": c.get("reason") or "",
        "when": ("before" if first_c and c.get("date", "") < first_c else "after" if last_c and c.get("date", "") > last_c
                 else "during"),
        "dx_m": c.get("dx_m"), "dy_m": c.get("dy_m"), "dz_m": c.get("dz_m")} for c in meta.get("coregistration", [])])
    if strips.empty:
        st.caption("cell.json lists no strips.")
    else:
        st.caption(f"{int(strips.used.sum())} of {len(strips)} strips over cell {row['tile_id']} were used; "
                   f"'when' is against the slump's first and last change ({first_c or '–'} – {last_c or '–'}); "
                   "dx/dy/dz: the strip's coregistration offset.")
        st.dataframe(strips, hide_index=True, width="stretch", key="strips_table")

# --------------------------------------------------------------------------- published inventories
st.markdown("#### In published inventories")
if overlays:
    st.caption(f"Dashed orange on the images: the {len(overlays)} matched outline(s) from the reference layers.")
if matches.empty:
    st.caption("No match recorded. `rts crossref --products PRODUCTS --reference FILE` matches the inventory "
               "against a published one (shapefile, GeoPackage, GeoParquet or CSV of centroids).")
else:
    st.dataframe(matches.rename(columns={"reference": "inventory", "reference_row": "row", "reference_id": "id",
                                         "iou": "IoU"}), hide_index=True, width="stretch")

# --------------------------------------------------------------------------- numbers
st.markdown("#### All columns")
table = {k: v for k, v in row.items() if k != "wkb"}
table["outline_wkt"] = shapely.to_wkt(geom, rounding_precision=1)
st.dataframe(pd.DataFrame({"column": list(table), "value": [str(v) for v in table.values()]}),
             hide_index=True, width="stretch")
st.caption(f"Processed {row.get('processed_at')} by pipeline {row.get('pipeline_version')}.")
