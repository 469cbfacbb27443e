"""KeepAliveBalance (executions/middleware.py): a web process holding more than its share of
the keep-alive connections closes the surplus after a response; alone, it closes nothing."""

from __future__ import annotations

import asyncio
import os

from executions.middleware import KeepAliveBalance


async def app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": [(b"x", b"1")]})
    await send({"type": "http.response.body", "body": b"ok"})


def serve(balance: KeepAliveBalance, clients: range) -> list[bool]:
    """One request from each client port; for each, whether its reply closed the connection."""

    async def run():
        closed = []
        for port in clients:
            sent = []

            async def send(message, sent=sent):
                sent.append(message)

            scope = {"type": "http", "http_version": "1.1", "client": ("127.0.0.1", port)}
            await balance(scope, None, send)
            closed.append((b"connection", b"close") in sent[0]["headers"])
        return closed

    return asyncio.run(run())


def balancer(tmp_path) -> KeepAliveBalance:
    balance = KeepAliveBalance(app)
    balance.folder = str(tmp_path)
    balance.path = str(tmp_path / str(os.getpid()))
    return balance


def test_a_process_alone_never_closes(tmp_path):
    assert not any(serve(balancer(tmp_path), range(40000, 40032)))


def test_a_process_over_its_share_closes_the_surplus(tmp_path):
    (tmp_path / str(os.getppid())).write_text("0")  # a live sibling holding no connection
    balance = balancer(tmp_path)
    serve(balance, range(40000, 40010))  # ten clients here, none there
    balance.refresh_at = 0  # refresh now: its share is 10 / 2 + 1 = 6
    closed = serve(balance, range(40000, 40010))
    assert sum(closed) == 4 and balance.closed == 4
    assert not any(serve(balance, range(40000, 40010)))  # no surplus until the next refresh


def test_a_sibling_that_exited_is_forgotten(tmp_path):
    gone = tmp_path / "999999999"
    gone.write_text("0")
    balance = balancer(tmp_path)
    serve(balance, range(40000, 40010))
    balance.refresh_at = 0
    assert not any(serve(balance, range(40000, 40010)))
    assert not gone.exists()
