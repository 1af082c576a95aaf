"""The dashboard as an ASGI app (``rts dashboard`` runs this file with ``streamlit run``).

It is :mod:`dashboard.app` plus one route, ``/files/<path>``, that streams published product
files from disk (:mod:`dashboard.files`): Streamlit's own download button would hold a
multi-gigabyte file in the server's memory. At start-up a background thread builds the Map
page's default view into the caches (:func:`dashboard.mapview.prewarm`), so that the first
visitor does not wait for the catalog and the map payloads; a visit arriving meanwhile waits
for that thread instead of doing the same work beside it.
"""

import contextlib
import threading
from pathlib import Path

import plotly.graph_objects  # noqa: F401  (the pages' heaviest import, done once at start-up)
import streamlit as st
from starlette.routing import Route

from dashboard import charts, files, mapview, state  # noqa: F401  (charts: imported for the pages)


def _prewarm() -> None:
    try:
        s = mapview.prewarm(state.products_dir())
        print(f"rts dashboard: default map view prepared in {s:.2f} s", flush=True)
    except Exception as exc:  # a folder without products etc.: the pages say so to the visitor
        print(f"rts dashboard: nothing prepared at start-up ({exc})", flush=True)
    finally:
        mapview.PREWARM_IDLE.set()


@contextlib.asynccontextmanager
async def _lifespan(app):
    mapview.PREWARM_IDLE.clear()  # before the thread starts: a visit arriving at once waits for it
    threading.Thread(target=_prewarm, name="rts-prewarm", daemon=True).start()
    yield


files.route_mounted = True
app = st.App(str(Path(__file__).resolve().parent / "app.py"), lifespan=_lifespan,
             routes=[Route(f"/{files.ROUTE}/{{path:path}}", files.serve, methods=["GET", "HEAD"])])
