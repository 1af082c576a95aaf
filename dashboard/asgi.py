"""The dashboard as an ASGI app (``rts dashboard`` runs this file with ``streamlit run``).

It is :mod:`dashboard.app` plus one route, ``/files/<path>``, that streams published product
files from disk (:mod:`dashboard.files`): Streamlit's own download button would hold a
multi-gigabyte file in the server's memory. At start-up a background thread builds the Map
page's default view into the caches (:func:`dashboard.mapview.prewarm`), so that the first
visitor does not wait for the catalog and the map payloads; a visit arriving meanwhile waits
for that thread instead of doing the same work beside it.
"""

import contextlib
import logging
import sys
import threading
from pathlib import Path

import plotly.graph_objects  # noqa: F401  (the pages' heaviest import, done once at start-up)
import streamlit as st
from starlette.routing import Route

from dashboard import charts, files, mapview, state  # noqa: F401  (charts: imported for the pages)

#: the server's own lines on its standard output (this file is the server's entry point, as
#: pipeline/cli.py is the command line's: it alone configures where they go)
log = logging.getLogger("rts.dashboard")
if not log.handlers:
    _h = logging.StreamHandler(sys.stdout)
    _h.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(_h)
    log.setLevel(logging.INFO)
    log.propagate = False


def _prewarm() -> None:
    try:
        s = mapview.prewarm(state.products_dir())
        log.info("rts dashboard: default map view prepared in %.2f s", s)
    except Exception as exc:  # a folder without products etc.: the pages say so to the visitor
        log.info("rts dashboard: nothing prepared at start-up (%s)", exc)
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
