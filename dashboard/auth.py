"""The reprocessing access token: where it comes from, and failing closed.

A token guards submitting and cancelling reprocessing jobs. It is read from the environment
(``RTS_DASHBOARD_TOKEN``) or from Streamlit's secrets (``.streamlit/secrets.toml``, key of the
same name). A token that is set but unusable (empty, not a string, shorter than
:data:`MIN_TOKEN_CHARS`, or a secrets file that does not parse) is an error, never "no
token": a typo must not open the page to everyone.
"""

from __future__ import annotations

import ipaddress
import os
import socket

NAME = "RTS_DASHBOARD_TOKEN"
MIN_TOKEN_CHARS = 16


class TokenError(ValueError):
    """A token is configured but cannot be used."""


def check_token(value, where: str) -> str:
    if not isinstance(value, str):
        raise TokenError(f"{where}: {NAME} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise TokenError(f"{where}: {NAME} is empty")
    if len(value) < MIN_TOKEN_CHARS:
        raise TokenError(f"{where}: {NAME} is {len(value)} characters; use at least {MIN_TOKEN_CHARS} "
                         "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(24))'`)")
    return value


def configured_token(environ=None, secrets=None) -> str | None:
    """The token, or None when none is configured anywhere. ``secrets``: a callable
    returning the secrets mapping (Streamlit's ``st.secrets``), which may raise when the
    file is malformed; a missing secrets file means no secret."""
    environ = os.environ if environ is None else environ
    if NAME in environ:
        return check_token(environ[NAME], "environment")
    if secrets is None:
        return None
    try:
        values = secrets()
        present = NAME in values
    except Exception as exc:  # Streamlit raises a FileNotFoundError subclass for both cases
        if _no_secrets(exc):
            return None
        raise TokenError(f"secrets file: cannot be read ({type(exc).__name__}: {exc})") from None
    return check_token(values[NAME], "secrets") if present else None


def _no_secrets(exc: Exception) -> bool:
    """Whether ``exc`` says there is no secrets file at all (not that one is broken)."""
    return getattr(exc, "error_id", None) == "no-secrets-found" or "no secrets" in str(exc).lower()


def secrets_files(cwd=None) -> list:
    """The secrets files Streamlit reads (global, then the project's), for the command line."""
    from pathlib import Path

    return [Path.home() / ".streamlit" / "secrets.toml", Path(cwd or Path.cwd()) / ".streamlit" / "secrets.toml"]


def file_secrets(paths) -> dict:
    """The merged contents of the secrets files that exist; TokenError for one that does not parse."""
    import tomllib

    out: dict = {}
    found = False
    for p in paths:
        if p.is_file():
            found = True
            try:
                out.update(tomllib.loads(p.read_text(encoding="utf-8")))
            except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as exc:
                raise TokenError(f"{p}: cannot be read ({exc})") from None
    if not found:
        raise FileNotFoundError("No secrets files found")
    return out


def is_loopback(address: str) -> bool:
    """True when ``address`` (an IP or host name) only listens on this machine."""
    if address in ("localhost", ""):
        return address == "localhost"
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        try:
            return all(ipaddress.ip_address(a[4][0]).is_loopback for a in socket.getaddrinfo(address, None))
        except OSError:
            return False


class Throttle:
    """Wrong-token guesses, counted for the whole dashboard process: after ``max_failures``
    within ``window_s`` seconds every check is refused until the window has passed, so a
    token cannot be guessed by reloading the page. Thread-safe (one instance per server)."""

    def __init__(self, max_failures: int = 5, window_s: float = 60.0, clock=None):
        import threading
        import time

        self.max_failures, self.window_s = max_failures, window_s
        self.clock = clock or time.monotonic
        self.failures: list[float] = []
        self.lock = threading.Lock()

    def check(self, given, token: str) -> tuple[bool, str]:
        """(True, "") when ``given`` is the token; (False, why) otherwise."""
        import hmac

        with self.lock:
            now = self.clock()
            self.failures = [t for t in self.failures if now - t < self.window_s]
            if len(self.failures) >= self.max_failures:
                wait = self.window_s - (now - self.failures[0])
                return False, f"Too many wrong tokens: try again in {wait:.0f} s."
            if isinstance(given, str) and hmac.compare_digest(given.encode(), token.encode()):
                return True, ""
            self.failures.append(now)
            return False, "The access token is missing or wrong."
