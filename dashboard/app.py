"""The thaw-slump dashboard (``rts dashboard --products DIR``): a Streamlit multipage app.

Pages (``st.navigation``): Map, Slump, Summary, Downloads, Reprocess. Every page reads
the products through :mod:`data_products.catalog` (DuckDB) and never imports the pipeline.
The products folder is given after ``--`` as ``--products DIR`` (or ``RTS_PRODUCTS``).
Map data is served by URL when Streamlit's static serving is on (``rts dashboard`` turns
it on); filters and the selected slump are kept in the URL query parameters.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

HERE = Path(__file__).resolve().parent

st.set_page_config(page_title="Thaw-slump volumetrics", layout="wide")

PAGES = [
    st.Page(str(HERE / "views" / "map.py"), title="Map", icon=":material/map:", url_path="map", default=True),
    st.Page(str(HERE / "views" / "slump.py"), title="Slump", icon=":material/query_stats:", url_path="slump"),
    st.Page(str(HERE / "views" / "summary.py"), title="Summary", icon=":material/bar_chart:", url_path="summary"),
    st.Page(str(HERE / "views" / "downloads.py"), title="Downloads", icon=":material/download:", url_path="downloads"),
    st.Page(str(HERE / "views" / "reprocess.py"), title="Reprocess", icon=":material/autorenew:", url_path="reprocess"),
]

page = st.navigation(PAGES)
page.run()
