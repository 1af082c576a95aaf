"""Product files streamed from disk, not through Streamlit's memory.

Streamlit's ``st.download_button`` reads what it offers into the server's memory (its media
file manager keeps the bytes); a products folder holds multi-gigabyte GeoParquet files and
rasters. ``rts dashboard`` therefore serves the dashboard through :mod:`dashboard.asgi`, which
adds one route, ``/files/<path>``, answered by :func:`serve` with Starlette's ``FileResponse``:
the file is sent in chunks from disk, with ``Range`` support (resumable downloads).

The Downloads page links to a file by :func:`signed_url`: the path, an expiry time and an
HMAC-SHA256 of both under a key drawn once per server process. The route serves a path only
with a valid, unexpired signature, and only if it is a published file inside the products
folder (:func:`data_products.catalog.published_file`): the queue, logs, run records, hidden and
temporary files and anything outside the folder are refused whatever the signature says.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import urllib.parse
from pathlib import Path

from starlette.responses import FileResponse, PlainTextResponse

from dashboard.state import products_dir
from data_products.catalog import QueryError, published_file

#: the route's prefix (relative to the dashboard's base URL)
ROUTE = "files"
#: a link offered on a page stays valid this long (s)
LINK_LIFETIME_S = 3600.0
_KEY = secrets.token_bytes(32)
#: set by :mod:`dashboard.asgi` when the route is mounted in this process
route_mounted = False


def _signature(relative: str, expires: int) -> str:
    return hmac.new(_KEY, f"{relative}\n{expires}".encode(), hashlib.sha256).hexdigest()


def signed_url(relative: str, now: float | None = None) -> str:
    """The link (relative to the dashboard's root) that downloads ``relative``, a path inside
    the products folder, for the next :data:`LINK_LIFETIME_S` seconds."""
    expires = int((time.time() if now is None else now) + LINK_LIFETIME_S)
    query = urllib.parse.urlencode({"expires": expires, "sig": _signature(relative, expires)})
    return f"/{ROUTE}/{urllib.parse.quote(relative)}?{query}"


class FileRefused(ValueError):
    """A request the route does not serve; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


def resolve(products: Path, relative: str, expires: str | None, sig: str | None, now: float | None = None) -> Path:
    """The file a request names, or FileRefused (403 bad or expired link, 404 not a
    published file)."""
    try:
        exp = int(expires or "")
    except ValueError:
        raise FileRefused("the link has no valid expiry", 403) from None
    if not sig or not hmac.compare_digest(str(sig), _signature(relative, exp)):
        raise FileRefused("the link's signature does not match: open the Downloads page again", 403)
    if exp < (time.time() if now is None else now):
        raise FileRefused("the link has expired: open the Downloads page again", 403)
    try:
        return published_file(products, relative)
    except QueryError as exc:
        raise FileRefused(str(exc), 404) from None


async def serve(request):
    """Starlette endpoint for ``/files/{path:path}``."""
    relative = request.path_params.get("path", "")
    try:
        target = resolve(products_dir(), relative, request.query_params.get("expires"),
                         request.query_params.get("sig"))
    except FileRefused as exc:
        return PlainTextResponse(f"{exc}\n", status_code=exc.status)
    return FileResponse(target, filename=target.name)
