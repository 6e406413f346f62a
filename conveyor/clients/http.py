"""The one place where httpx's exceptions and HTTP statuses become conveyor errors.

Every HTTP client in this package sends through ``send`` so that retry decisions
(``TransientError`` or not) are made identically for all of them.
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from conveyor.errors import (
    AuthenticationFailed,
    ConnectFailed,
    ConveyorError,
    Locked,
    NotFound,
    PermissionDenied,
    Rejected,
    RequestTimeout,
    ServerError,
    TLSVerificationFailed,
)


@functools.lru_cache(maxsize=32)
def _context(cafile: str | None, _mtime_ns: int) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=cafile)


def tls_context(ca_bundle: Path | None = None) -> ssl.SSLContext:
    """A verifying TLS context, shared: loading trust anchors costs tens of milliseconds
    and a pipeline run makes many short-lived clients. A bundle changed on disk is
    loaded anew."""
    if ca_bundle is None:
        return _context(None, 0)
    return _context(str(ca_bundle), ca_bundle.stat().st_mtime_ns)


def _is_tls_failure(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return True
        seen = seen.__cause__ or seen.__context__
    return "CERTIFICATE_VERIFY_FAILED" in str(exc)


@contextmanager
def translate_transport_errors(system: str) -> Iterator[None]:
    """Map httpx transport failures to conveyor errors, naming ``system``."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise RequestTimeout(f"{system}: no answer in time ({type(exc).__name__})") from None
    except httpx.ConnectError as exc:
        if _is_tls_failure(exc):
            raise TLSVerificationFailed(
                f"{system}: TLS verification failed ({exc}); set a CA bundle that signs its certificate"
            ) from None
        raise ConnectFailed(f"{system}: cannot connect ({exc})") from None
    except httpx.TransportError as exc:
        raise ConnectFailed(f"{system}: transport error ({type(exc).__name__}: {exc})") from None


def error_for_status(system: str, response: httpx.Response, message: str = "") -> ConveyorError:
    """The conveyor error for a non-success ``response``; ``message`` is the peer's own words."""
    status = response.status_code
    what = f"{system}: {response.request.method} {response.request.url.path} answered {status}"
    if message:
        what += f": {message}"
    if status == 401:
        return AuthenticationFailed(what)
    if status == 403:
        return PermissionDenied(what)
    if status == 404:
        return NotFound(what)
    if status == 409:
        return Locked(what)
    if status in (400, 422):
        return Rejected(what)
    if status >= 500 or status == 429:
        return ServerError(what, status)
    return Rejected(what)


def send(
    client: httpx.Client, request: httpx.Request, system: str, **kwargs: object
) -> httpx.Response:
    """Send ``request`` and translate transport failures; the caller judges the status."""
    with translate_transport_errors(system):
        return client.send(request, **kwargs)  # type: ignore[arg-type]
