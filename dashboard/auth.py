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
    except FileNotFoundError:
        return None
    except Exception as exc:  # a secrets file that does not parse
        if "No secrets" in str(exc) or "not found" in str(exc).lower():
            return None
        raise TokenError(f"secrets file: cannot be read ({type(exc).__name__}: {exc})") from None
    return check_token(values[NAME], "secrets") if present else None


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
