"""Run the dashboard in a background process (for end-to-end tests, benchmarks and screenshots).

``running_dashboard(products)`` starts ``rts dashboard --products DIR --port N --headless``
(the real entry point) in its own process group, waits until Streamlit answers its health
check, yields the base URL and stops the whole group afterwards. ``browser()`` launches
the system Chromium (Debian's ``/usr/bin/chromium``) headless through Playwright; no browser
is ever downloaded.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

CHROMIUM = os.environ.get("RTS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--enable-unsafe-swiftshader"]


def chromium_path() -> str | None:
    """The system Chromium, or None when it is not installed."""
    p = Path(CHROMIUM)
    if p.is_file() and os.access(p, os.X_OK):
        return str(p)
    found = shutil.which("chromium")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_dashboard(products: Path, port: int | None = None, timeout_s: float = 60.0, env: dict | None = None,
                      args: list[str] | tuple = (), ready_line: str | None = None):
    """Start ``rts dashboard`` on ``products`` (with extra ``args``); yield
    ``http://127.0.0.1:<port>``; stop it (SIGTERM to its process group, as Ctrl-C would).
    With ``ready_line``, also wait until the server's output holds that text."""
    port = port or free_port()
    cmd = [sys.executable, "-m", "pipeline", "dashboard", "--products", str(products), "--port", str(port),
           "--headless", *args]
    full_env = {**os.environ, "STREAMLIT_SERVER_FILE_WATCHER_TYPE": "none", **(env or {})}
    log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"rts-dashboard-{port}.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=full_env, start_new_session=True,
                            cwd=Path(__file__).resolve().parents[1])
    url = f"http://127.0.0.1:{port}"
    try:
        t0 = time.time()
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the dashboard exited with {proc.returncode}; see {log.name}")
            try:
                with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
                    log.flush()
                    said = Path(log.name).read_text() if ready_line else ""
                    if ready_line and "nothing prepared at start-up" in said:
                        raise RuntimeError(f"the dashboard prepared nothing at start-up; see {log.name}")
                    if r.status == 200 and (ready_line is None or ready_line in said):
                        break
            except OSError:
                pass
            if time.time() - t0 > timeout_s:
                raise RuntimeError(f"the dashboard did not answer within {timeout_s:.0f} s; see {log.name}")
            time.sleep(0.3)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        log.close()


@contextlib.contextmanager
def browser():
    """A headless Playwright Chromium on the system browser (never a downloaded one)."""
    from playwright.sync_api import sync_playwright

    exe = chromium_path()
    if exe is None:
        raise FileNotFoundError(f"{CHROMIUM} is absent: install Debian's chromium (apt-get install chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def wait_for_app(page, timeout_ms: int = 60_000) -> None:
    """Wait until the Streamlit script run has finished (no 'running' indicator) after a change."""
    page.wait_for_timeout(300)
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=timeout_ms)
