"""Downloads page: the current selection as GeoParquet and CSV, the full product files, the STAC
collection and the data dictionary. Only published files inside the products folder are served;
under ``rts dashboard`` they stream from disk through signed links (:mod:`dashboard.files`)."""

from __future__ import annotations

import json

import streamlit as st

from dashboard import files, state
from data_products import schema
from data_products.catalog import QueryError
from data_products.store import ProductsStore

cat = state.require_catalog()
f = state.sidebar_filters(cat)

st.title("Downloads")
n = cat.count(f)
st.subheader("Current selection")
st.caption(f"{n:,} slumps — {state.describe(f)}")
if n == 0:
    st.warning("The selection is empty: widen the filters to download slumps.")
else:
    key = str(hash((f, cat.version())))
    c1, c2 = st.columns(2)
    c1.download_button("Selection as GeoParquet", data=lambda: cat.export_geoparquet(f),
                       file_name="rts_selection.parquet", mime="application/vnd.apache.parquet",
                       key=f"dl_gpq_{key}", icon=":material/table_view:", on_click="ignore")
    c2.download_button("Selection as CSV (WKT + lon/lat)", data=lambda: cat.export_csv(f),
                       file_name="rts_selection.csv", mime="text/csv", key=f"dl_csv_{key}", icon=":material/csv:",
                       on_click="ignore")
    st.caption("GeoParquet 1.1 (WKB, bbox covering column, EPSG:3413); CSV with the outline as WKT in "
               "EPSG:3413 metres plus centroid_lon/centroid_lat (WGS 84).")



def offer_file(container, label: str, p, key: str, mime: str = "application/octet-stream") -> None:
    """A download of the published file ``p``: a signed link streamed from disk when the file
    route is mounted (``rts dashboard``), else Streamlit's button (which reads the file into
    memory: the case of ``streamlit run dashboard/app.py`` and of tests)."""
    if files.route_mounted:
        rel = p.relative_to(cat.products).as_posix()
        container.link_button(label, files.signed_url(rel), icon=":material/download:")
    else:
        container.download_button(label, data=lambda p=p: p.read_bytes(), file_name=p.name, mime=mime, key=key,
                                  on_click="ignore")


st.subheader("Full products")
names = [schema.INVENTORY, schema.TIMESERIES, schema.TILES, schema.INVENTORY_CSV, schema.TIMESERIES_CSV,
         schema.STAC_COLLECTION, schema.DICTIONARY_MD, schema.DICTIONARY_JSON]
mimes = {".parquet": "application/vnd.apache.parquet", ".csv": "text/csv", ".json": "application/json",
         ".md": "text/markdown"}
for name in names:
    try:
        p = cat.path(name)
    except QueryError:
        st.markdown(f"- `{name}` — not published in this products folder")
        continue
    cols = st.columns([3, 1])
    cols[0].markdown(f"- `{name}` — {p.stat().st_size / 1e6:,.2f} MB")
    offer_file(cols[1], "Download", p, f"dl_full_{name}", mimes.get(p.suffix, "application/octet-stream"))

with st.expander("Another file of the products folder"):
    rel = st.text_input("Path relative to the products folder", placeholder=ProductsStore.tile_key("<cell id>", "dh.tif"),
                        key="w_other_file", max_chars=300)
    if rel.strip():
        try:
            p = cat.path(rel.strip())
            offer_file(st, f"Download {p.name}", p, "dl_other")
        except QueryError as exc:
            st.error(state.plain(f"{exc}. Only published files inside the products folder can be downloaded."))

st.subheader("STAC collection")
try:
    stac = cat.path(schema.STAC_COLLECTION)
    try:
        coll = json.loads(stac.read_text())
        st.markdown(f"**{coll.get('title') or coll.get('id')}** — {coll.get('description', '')[:300]}")
        st.json(coll, expanded=False)
    except (OSError, ValueError) as exc:
        st.error(f"{schema.STAC_COLLECTION} is not readable JSON: {exc}")
except QueryError:
    st.info(f"No STAC collection ({schema.STAC_COLLECTION}) in this products folder yet; the pipeline writes it "
            "when it publishes.")

st.subheader("Data dictionary")
try:
    md = cat.path(schema.DICTIONARY_MD).read_text()
    st.caption(f"From {schema.DICTIONARY_MD} in the products folder.")
except QueryError:
    md = schema.dictionary_markdown()
    st.caption(f"{schema.DICTIONARY_MD} is not in the products folder; this is the product contract it is "
               "generated from.")
with st.expander("Show the data dictionary"):
    st.markdown(md)
