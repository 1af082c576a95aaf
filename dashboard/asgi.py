"""The dashboard as an ASGI app (``rts dashboard`` runs this file with ``streamlit run``).

It is :mod:`dashboard.app` plus one route, ``/files/<path>``, that streams published product
files from disk (:mod:`dashboard.files`): Streamlit's own download button would hold a
multi-gigabyte file in the server's memory.
"""

from pathlib import Path

import streamlit as st
from starlette.routing import Route

from dashboard import files

files.route_mounted = True
app = st.App(str(Path(__file__).resolve().parent / "app.py"),
             routes=[Route(f"/{files.ROUTE}/{{path:path}}", files.serve, methods=["GET", "HEAD"])])
