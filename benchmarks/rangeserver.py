"""A static file server on 127.0.0.1 that honours ``Range`` requests, as object stores do: the
loopback stand-in for PGC's bucket in tests and benchmarks. Its ``broken`` map makes chosen
files answer 404 or drop the connection; ``served`` counts the bytes sent per path."""

from __future__ import annotations

import contextlib
import re
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class RangeHandler(SimpleHTTPRequestHandler):
    """Static files with ``Range: bytes=a-b`` (206 Partial Content), as object stores answer.
    ``server.broken``: {path suffix: "404" | "drop"}; ``server.served``: bytes sent per path."""

    def log_message(self, *args):  # quiet
        pass

    def _broken(self) -> str | None:
        for suffix, how in self.server.broken.items():
            if self.path.split("?")[0].endswith(suffix):
                return how
        return None

    def do_GET(self):
        how = self._broken()
        if how == "404":
            self.send_error(404, "Not Found")
            return
        if how == "drop":
            self.connection.close()  # the connection drops before any answer
            return
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404, "Not Found")
            return
        data = path.read_bytes()
        m = re.match(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if m:
            a = int(m.group(1))
            b = min(int(m.group(2)) if m.group(2) else len(data) - 1, len(data) - 1)
            body = data[a:b + 1]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {a}-{b}/{len(data)}")
        else:
            body = data
            self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        self.wfile.write(body)
        with self.server.lock:
            self.server.served[self.path] = self.server.served.get(self.path, 0) + len(body)

    def do_HEAD(self):
        how = self._broken()
        if how:
            self.send_error(404, "Not Found")
            return
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404, "Not Found")
            return
        self.send_response(200)
        self.send_header("Content-Length", str(path.stat().st_size))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()


@contextlib.contextmanager
def serve(root: Path):
    """Serve ``root`` on a free loopback port: yields (base URL, server)."""
    srv = ThreadingHTTPServer(("127.0.0.1", 0), partial(RangeHandler, directory=str(root)))
    srv.broken, srv.served, srv.lock = {}, {}, threading.Lock()
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}", srv
    finally:
        srv.shutdown()
        srv.server_close()
