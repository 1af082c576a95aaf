"""Map page: every selected slump on the polar map, aggregates at low zoom, outlines in a focus box."""

from __future__ import annotations

import time

import plotly.graph_objects as go
import streamlit as st

from dashboard import mapview, state
from data_products import grid
from data_products.catalog import METRICS, QueryError, parse_bbox

mapview.await_prewarm()  # the server's start-up preparation of this view, if still running
cat = state.require_catalog()
f = state.sidebar_filters(cat)
metric = state.color_by()
ss = st.session_state

st.title("Retrogressive thaw slumps")
t0 = time.perf_counter()
tot = cat.totals(f)
c1, c2, c3, c4 = st.columns(4)
c1.metric("Slumps selected", f"{tot['n']:,}")
c2.metric("Volume (m³)", f"{tot['volume_m3']:,.0f}")
c3.metric("Carbon (t C/yr)", f"{tot['carbon_kg_yr'] / 1000:,.0f}")
c4.metric(f"Share with r ≥ {tot['r_threshold']:g}", "–" if tot["n"] == 0 else f"{100 * tot['share_r_ge']:.0f} %")
st.caption(f"Selection: {state.describe(f)}")

if tot["n"] == 0 and cat.count() == 0:
    st.warning(f"The inventory in {cat.products} holds no slump. {state.why_no_slumps(cat.tile_status_counts())}")
elif tot["n"] == 0:
    st.warning("No slump matches these filters. Widen them in the sidebar (or press 'Reset filters').")

# --------------------------------------------------------------------------- the view box
sel = state.selected_slump()
sel_row = None
if sel:
    try:
        sel_row = cat.slump(sel)
    except QueryError:
        sel_row = None



def _around(wkb: bytes, half_m: float = 5_000.0) -> tuple[float, float, float, float]:
    """A focus box of 2 * half_m metres centred on a slump."""
    import shapely

    c = shapely.from_wkb(wkb).centroid
    return (c.x - half_m, c.y - half_m, c.x + half_m, c.y + half_m)


def _fmt_box(b) -> str:
    return ",".join(f"{v:.0f}" for v in b) if b else ""


def _focus(b) -> None:
    """Focus the map on box ``b`` from the next run on."""
    ss["focus_box"] = tuple(b)
    ss["_pending_focus"] = _fmt_box(b)
    ss["_pending_view"] = "Focus box"


options = ["Arctic", "Fit selection", "Focus box"]
if "_pending_view" in ss:  # set by a click before the radio exists in the next run
    ss["w_view"] = ss.pop("_pending_view")
view = st.radio("View", options, horizontal=True, key="w_view",
                help="Outlines and 2 km work cells are drawn in a focus box up to "
                     f"{mapview.FOCUS_MAX_M / 1000:.0f} km wide; a click on an aggregate square focuses on it.")
if view == "Fit selection":
    ext = cat.extent(f) if tot["n"] else None
    box = ext if ext else mapview.ARCTIC_BOX
    if ext:
        pad = max(5_000.0, 0.05 * mapview.box_size(ext))
        box = (ext[0] - pad, ext[1] - pad, ext[2] + pad, ext[3] + pad)
elif view == "Focus box":
    if "_pending_focus" in ss:  # a click set the box: show it in the field before the field exists
        ss["w_focus"] = ss.pop("_pending_focus")
    if "w_focus" not in ss:
        ss["w_focus"] = _fmt_box(ss.get("focus_box"))
    text = st.text_input("Focus box xmin,ymin,xmax,ymax (EPSG:3413 m)", key="w_focus",
                         placeholder="-2500000,-20000,-2480000,0", max_chars=200)
    box = None
    try:
        box = parse_bbox(text) if text.strip() else None
    except QueryError as exc:
        st.error(state.plain(f"{exc}. The previous focus box stays."))
    box = box or ss.get("focus_box")
    if box is None and sel_row is not None:
        box = _around(sel_row["wkb"])
    if box is None:
        st.info("Type a box, click an aggregate square on the Arctic view, or select a slump.")
        box = mapview.ARCTIC_BOX
    else:
        ss["focus_box"] = box
else:
    box = mapview.ARCTIC_BOX

picked = state.picked_cells()
ref_names = mapview.reference_names(cat.products)
refs = st.multiselect("Published inventories on the map", ref_names, key="w_refs",
                      help="Reference inventories given to `rts dashboard --reference DIR`: hollow circles at their "
                           "slumps, outlines in a focus box.") if ref_names else []
deck, facts = mapview.build_deck(cat, f, metric, box, selected_wkb=sel_row["wkb"] if sel_row else None,
                                 picked=picked, references=refs)
event = st.pydeck_chart(deck, height=mapview.MAP_HEIGHT, on_select="rerun", selection_mode="single-object",
                        key=f"polar_map_{ss.get('map_nonce', 0)}")
st.markdown(mapview.legend_html(metric, METRICS[metric]), unsafe_allow_html=True)
if refs:
    st.markdown(" ".join(
        f"<span style='color:rgb{mapview.REFERENCE_COLORS[ref_names.index(n) % len(mapview.REFERENCE_COLORS)]}'>◯</span>"
        f" {state.plain(n)}" for n in refs), unsafe_allow_html=True)
detail = (f"{facts['n_points']:,} points" + (f", {facts['n_polygons']:,} outlines in the focus box" if facts["focus"]
                                            else f", {facts['n_cells_agg']:,} aggregate squares of "
                                                 f"{mapview.AGG_CELL_M / 1000:.0f} km"))
vb = mapview.visible_box(box)
across_km = (vb[2] - vb[0]) / 1000
st.caption(f"{detail}. The view is {across_km:,.0f} km across (at 900 px, 100 px ≈ {across_km / 9:,.1f} km). "
           f"Map data served {'by URL' if mapview.static_serving() else 'inline'}; built in "
           f"{(time.perf_counter() - t0):.2f} s. EPSG:3413 polar stereographic, 45°W down; {mapview.GRATICULE_NOTE}. "
           "Land: Natural Earth (public domain). Synthetic products are load-test data, not results.")

# --------------------------------------------------------------------------- selection
objs = (event.selection.get("objects") or {}) if event is not None and hasattr(event, "selection") else {}


def _acted() -> None:
    """A click was acted on: the next run draws a fresh chart (a new key), whose selection is
    empty, so that clicking the same object again acts again (e.g. unpicks a cell)."""
    ss["map_nonce"] = ss.get("map_nonce", 0) + 1
    st.rerun()


for layer_id, items in objs.items():
    if not items:
        continue
    o = items[0]
    if layer_id == "aggregate" and "x0" in o:
        cell = mapview.AGG_CELL_M
        _focus((o["x0"], o["y0"], o["x0"] + cell, o["y0"] + cell))
        _acted()
    elif layer_id.startswith("points-") and (xy := mapview.clicked_xy(o)):
        # a point at any zoom: the selected slump nearest the clicked point (points are 2 px)
        near = cat.nearest(*xy, f, max_m=max(500.0, 0.01 * mapview.box_size(vb)))
        if near:
            state.select_slump(near)
            _acted()
    elif layer_id in ("outlines", "centroids") and o.get("id"):
        state.select_slump(o["id"])
        _acted()
    elif layer_id == "cells" and o.get("tile"):
        if state.toggle_cell(o["tile"]):
            _acted()
        st.warning(f"At most {state.MAX_PICKED_CELLS} cells can be picked; unpick some first.")

def cell_box_picker(view_box) -> None:
    """The work grid of the view as a Plotly chart in box-select mode: the cells a dragged box
    covers are added to the picked cells (the deck.gl map picks by click only)."""
    cells = grid.cells_in_bounds(view_box)
    cx = [(c.bounds[0] + c.bounds[2]) / 2 for c in cells]
    cy = [(c.bounds[1] + c.bounds[3]) / 2 for c in cells]
    ids = [c.id for c in cells]
    on = set(picked)
    fig = go.Figure(go.Scatter(x=cx, y=cy, mode="markers", customdata=ids, hovertemplate="%{customdata}<extra></extra>",
                               marker=dict(symbol="square", size=14, line=dict(width=1, color="#555"),
                                           color=["#2866e6" if i in on else "rgba(0,0,0,0.05)" for i in ids])))
    fig.update_layout(dragmode="select", height=360, margin=dict(l=0, r=0, t=10, b=0), showlegend=False,
                      xaxis=dict(title="x (EPSG:3413 m)"), yaxis=dict(title="y (m)", scaleanchor="x"))
    ev = st.plotly_chart(fig, key=f"cell_box_{ss.get('box_nonce', 0)}", on_select="rerun", selection_mode=("box",))
    chosen = [ids[p["point_index"]] for p in ((ev.selection.get("points") or []) if ev else []) if "point_index" in p]
    if chosen:
        state.set_picked_cells(picked + chosen)
        ss["box_nonce"] = ss.get("box_nonce", 0) + 1
        st.rerun()


if facts["focus"] and mapview.box_size(vb) <= mapview.GRID_MAX_M:
    with st.expander("Pick cells by dragging a box"):
        cell_box_picker(vb)

if picked:
    with st.container(border=True):
        st.markdown(f"**{len(picked)} cell{'s' if len(picked) != 1 else ''} picked for reprocessing** "
                    "(click a cell on the map to pick or unpick it)")
        st.caption(", ".join(picked[:60]) + (" …" if len(picked) > 60 else ""))
        p1, p2 = st.columns(2)
        with p1:
            st.page_link("views/reprocess.py", label="Reprocess the picked cells", icon=":material/autorenew:")
        if p2.button("Clear the picked cells", key="clear_picked"):
            state.set_picked_cells([])
            st.rerun()
elif facts["focus"]:
    st.caption("Click 2 km work cells on the map to pick them for reprocessing.")

if sel_row is not None:
    st.subheader(f"Selected: {sel_row['rts_id']}")
    a, b, c, d = st.columns(4)
    a.metric("Volume (m³)", f"{sel_row['volume_m3']:,.0f} ± {sel_row['volume_sigma_m3']:,.0f}")
    b.metric("Area (ha)", f"{sel_row['area_m2'] / 1e4:.2f}")
    c.metric("Rate (m³/yr)", f"{sel_row['volume_rate_m3_yr']:,.0f}")
    r = sel_row.get("r_temperature")
    d.metric("r with temperature", "–" if r is None or r != r else f"{r:.2f}")
    l1, l2 = st.columns(2)
    with l1:
        st.page_link("views/slump.py", label=f"Open {sel_row['rts_id']} on the Slump page", icon=":material/query_stats:")
    if l2.button("Focus the map on it"):
        _focus(_around(sel_row["wkb"]))
        st.rerun()

st.subheader("Largest slumps in the selection")
top = cat.table(f, limit=200, order_by="volume_m3" if metric == "r_temperature" else metric)
if top.empty:
    st.info("Nothing to list.")
else:
    show = top[["rts_id", "region", "area_m2", "volume_m3", "volume_sigma_m3", "volume_rate_m3_yr",
                "r_temperature", "p_temperature", "first_change", "last_change", "detector_score", "tile_id"]]
    picked = st.dataframe(show, hide_index=True, width="stretch", on_select="rerun",
                          selection_mode="single-row", key="top_table", height=300)
    rows = picked.selection.rows if picked is not None else []
    if rows and ss.get("_table_event") != show.iloc[rows[0]].rts_id:
        ss["_table_event"] = show.iloc[rows[0]].rts_id
        state.select_slump(ss["_table_event"])
        st.rerun()
state.filters_to_query(f, metric, state.selected_slump())
