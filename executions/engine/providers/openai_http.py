"""A lean streamed chat-completions call for OpenAI-compatible servers: stdlib `http.client`
and `json`, no SDK objects per chunk.

Why: a worker waiting on many slow models starts model runs as fast as its CPU allows, and the
`openai` SDK's streamed call (request building, httpx, a pydantic object per chunk) cost ~5.8 ms
of CPU against ~0.7 ms for the same call here (docs/performance-history.md, "Runs in flight"). The
wire protocol is small and stable; what the SDK gave us is kept: the same errors (HTTP status
with the server's message; 429/5xx, timeouts and connection errors transient), usage from the
`include_usage` chunk, a stream closed from another thread on a stop. The SDK path stays for
what this does not do: a proxy from the environment (openai.py decides).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import ssl
import threading
import urllib.request
from functools import cache
from typing import Any
from urllib.parse import urlsplit

from executions.engine.providers import ProviderError

DEFAULT_BASE_URL = "https://api.openai.com/v1"
# Idle keep-alive connections kept per server (a reply that ends with `Connection: close`, as
# most streaming servers send, is not kept).
MAX_IDLE = 256

_idle: dict[tuple[str, str, int], list[http.client.HTTPConnection]] = {}
_idle_lock = threading.Lock()


@cache
def _ssl_context() -> ssl.SSLContext:
    return ssl.create_default_context()


def usable(base_url: str) -> bool:
    """This client serves `base_url` unless the environment routes it through a proxy."""
    host = urlsplit(base_url or DEFAULT_BASE_URL).hostname or ""
    proxies = urllib.request.getproxies()
    return not proxies or bool(urllib.request.proxy_bypass(host))


def _connection(
    scheme: str, host: str, port: int, timeout: float, *, fresh: bool = False
) -> tuple[http.client.HTTPConnection, bool]:
    """(a connection, whether it was kept from an earlier call)."""
    if not fresh:
        with _idle_lock:
            idle = _idle.get((scheme, host, port))
            conn = idle.pop() if idle else None
        if conn is not None:
            conn.timeout = timeout
            if conn.sock is not None:
                conn.sock.settimeout(timeout)
            return conn, True
    if scheme == "https":
        return http.client.HTTPSConnection(
            host, port, timeout=timeout, context=_ssl_context()
        ), False
    return http.client.HTTPConnection(host, port, timeout=timeout), False


def _keep(key: tuple[str, str, int], conn: http.client.HTTPConnection) -> None:
    with _idle_lock:
        idle = _idle.setdefault(key, [])
        if len(idle) < MAX_IDLE:
            idle.append(conn)
            return
    conn.close()


def _hang_up(sockets: list[socket.socket]) -> None:
    """From another thread (a stop): end a blocked read at once (close alone may not)."""
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def stream_chat(
    base_url: str, api_key: str, body: dict[str, Any], timeout: float, register: Any
) -> Any:
    """POST {base_url}/chat/completions with `stream: true`; yields each chunk as a dict.
    `register(closer)` lets a watchdog hang up. Raises ProviderError as the SDK path does."""
    url = urlsplit(base_url or DEFAULT_BASE_URL)
    scheme = url.scheme or "http"
    port = url.port or (443 if scheme == "https" else 80)
    key = (scheme, url.hostname or "", port)
    path = url.path.rstrip("/") + "/chat/completions"
    payload = json.dumps(body).encode()
    headers = {
        "Content-Type": "application/json",
        "Accept": "text/event-stream",
        "Authorization": f"Bearer {api_key or 'not-needed'}",
        "User-Agent": "steward",
    }
    conn, reused = _connection(*key, timeout)
    # The call's sockets, for a stop to hang up: a response that ends with the connection
    # (`Connection: close`) holds its socket after the connection has let go of it.
    sockets: list[socket.socket] = []
    register(lambda: _hang_up(sockets))
    finished = False
    try:
        try:
            try:
                conn.request("POST", path, body=payload, headers=headers)
                sockets.append(conn.sock)
                response = conn.getresponse()
            except (ConnectionError, http.client.RemoteDisconnected):
                if not reused:
                    raise
                # A kept connection the server had closed meanwhile: once more on a new one.
                conn.close()
                conn, _ = _connection(*key, timeout, fresh=True)
                conn.request("POST", path, body=payload, headers=headers)
                sockets.append(conn.sock)
                response = conn.getresponse()
        except TimeoutError as exc:
            raise ProviderError(f"openai: APITimeoutError: {exc}", transient=True) from None
        except (OSError, http.client.HTTPException) as exc:
            raise ProviderError(f"openai: APIConnectionError: {exc}", transient=True) from None
        if response.status >= 300:
            status = response.status
            raise ProviderError(
                f"openai: HTTP {status}: {_error_text(response)}",
                transient=status == 429 or status >= 500,
                status=status,
            )
        try:
            for line in response:
                if not line.startswith(b"data:"):
                    continue  # comments, event names, blank separators
                data = line[5:].strip()
                if data == b"[DONE]":
                    break
                chunk = json.loads(data)
                if isinstance(chunk, dict) and chunk.get("error"):
                    error = chunk["error"]
                    message = error.get("message") if isinstance(error, dict) else error
                    raise ProviderError(f"openai: stream error: {message}")
                yield chunk
            response.read()  # the rest (chunked encoding's end) so the connection can be kept
            finished = not response.will_close
        except TimeoutError as exc:
            raise ProviderError(f"openai: APITimeoutError: {exc}", transient=True) from None
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise ProviderError(f"openai: APIConnectionError: {exc}", transient=True) from None
    finally:
        if finished:
            _keep(key, conn)
        else:
            conn.close()  # a stop, an error, or the server closes: not reused


def _error_text(response: http.client.HTTPResponse) -> str:
    raw = response.read()
    try:
        body = json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")[:500] or response.reason
    error = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    return str(error)[:500]
