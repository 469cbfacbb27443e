"""The live socket: who may connect, which groups a page joins, and the fragments it pushes."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
from channels.auth import AuthMiddlewareStack
from channels.db import database_sync_to_async
from channels.routing import URLRouter
from channels.security.websocket import AllowedHostsOriginValidator
from channels.testing import WebsocketCommunicator
from django.test import Client

from approvals import services as approval_services
from executions import lifecycle, routing
from executions.lifecycle import Actor
from executions.live import events, fanout
from tests.executions.dashboard_helpers import park, start

pytestmark = [pytest.mark.django_db(transaction=True)]

# The same stack as config/asgi.py, without the lifespan wrapper that starts a worker.
app = AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(routing.websocket_urlpatterns)))


def session_cookie(member) -> str:
    client = Client()
    client.force_login(member.user)
    return client.cookies["sessionid"].value


async def connect(member, origin: str = "http://testserver", **params):
    headers = [(b"origin", origin.encode()), (b"host", b"testserver")]
    if member is not None:
        cookie = await database_sync_to_async(session_cookie)(member)
        headers.append((b"cookie", f"sessionid={cookie}".encode()))
    path = "/ws/live/?" + urlencode(params)
    communicator = WebsocketCommunicator(app, path, headers=headers)
    connected, code = await communicator.connect()
    return communicator, connected, code


async def receive_all(communicator, timeout: float = 5.0) -> str:
    """Every frame that arrives within `timeout` seconds, joined."""
    frames = []
    # receive_nothing() waits without cancelling the application (a receive timeout would).
    while not await communicator.receive_nothing(timeout=timeout):
        frames.append(await communicator.receive_from())
        timeout = 1.0
    return "".join(frames)


async def test_it_refuses_a_visitor_without_a_session(workspace):
    communicator, connected, code = await connect(None, page="executions", ws=workspace.pk)
    assert not connected
    assert code == 4401


async def test_it_refuses_another_origin(owner):
    communicator, connected, _ = await connect(
        owner, origin="http://evil.example", page="executions", ws=owner.workspace.pk
    )
    assert not connected


async def test_it_refuses_a_workspace_the_user_is_not_in(owner, outsider):
    _, connected, code = await connect(outsider, page="executions", ws=owner.workspace.pk)
    assert not connected
    assert code == 4403


async def test_it_refuses_an_execution_of_another_workspace(agent, outsider):
    execution = await database_sync_to_async(start)(agent)
    _, connected, code = await connect(
        outsider, page="execution", ws=outsider.workspace.pk, id=execution.pk
    )
    assert not connected
    assert code == 4404


async def test_the_list_page_gets_new_rows_on_top_and_status_changes_in_place(agent, viewer):
    communicator, connected, _ = await connect(
        viewer, page="executions", ws=agent.workspace_id, insert="1"
    )
    assert connected
    # A run started after the page opened appears at the top of the list.
    execution = await database_sync_to_async(start)(agent)
    html = await receive_all(communicator)
    assert 'hx-swap-oob="afterbegin:#exec-rows"' in html
    assert f'id="exec-{execution.pk}"' in html
    assert "Pending" in html
    # A status change replaces the same row in place.
    await database_sync_to_async(lifecycle.transition)(execution, "running", type="start")
    html = await receive_all(communicator)
    assert f'<tr id="exec-{execution.pk}"' in html
    assert 'data-status="running"' in html
    assert "Running" in html
    await communicator.disconnect()


async def test_filtered_list_pages_only_insert_matching_runs(agent, viewer):
    communicator, connected, _ = await connect(
        viewer, page="executions", ws=agent.workspace_id, status="failed", insert="1"
    )
    assert connected
    execution = await database_sync_to_async(start)(agent)
    html = await receive_all(communicator)
    # Not failed: at most an in-place update of a row the page does not show, never an insert.
    assert "afterbegin" not in html
    assert f"exec-{execution.pk}" in html or html == ""
    await communicator.disconnect()


async def test_a_workspace_never_hears_about_another_workspaces_runs(agent, outsider):
    communicator, connected, _ = await connect(
        outsider, page="executions", ws=outsider.workspace.pk
    )
    assert connected
    execution = await database_sync_to_async(start)(agent)
    await database_sync_to_async(lifecycle.transition)(execution, "running", type="start")
    assert await receive_all(communicator, timeout=0.8) == ""
    await communicator.disconnect()


async def test_the_detail_page_gets_its_header_timeline_and_stream(agent, viewer):
    execution = await database_sync_to_async(start)(agent)
    communicator, connected, _ = await connect(
        viewer, page="execution", ws=agent.workspace_id, id=execution.pk
    )
    assert connected
    await database_sync_to_async(lifecycle.transition)(
        execution, "running", type="start", message="worker picked it up"
    )
    html = await receive_all(communicator)
    assert 'id="exec-header" hx-swap-oob="true"' in html
    assert 'hx-swap-oob="beforeend:#exec-timeline"' in html
    assert 'id="tr-2"' in html and "worker picked it up" in html
    await database_sync_to_async(events.stream_event)(
        execution_id=execution.pk, event_type="content", data={"content": "Hello, Ada"}, event_id=7
    )
    html = await receive_all(communicator)
    assert 'hx-swap-oob="beforeend:#exec-stream"' in html
    assert 'id="ev-7"' in html and "Hello, Ada" in html
    await communicator.disconnect()


async def test_the_inbox_shows_who_decided_an_item_live(agent, viewer, teammate):
    execution = await database_sync_to_async(start)(agent)
    communicator, connected, _ = await connect(
        viewer, page="approvals", ws=agent.workspace_id, tab="all"
    )
    assert connected
    approval = await database_sync_to_async(park)(execution)
    html = await receive_all(communicator)
    assert 'hx-swap-oob="beforeend:#inbox-items"' in html
    assert f'id="approval-item-{approval.pk}"' in html
    assert 'id="nav-approvals-count" class="count-pill" data-count="1"' in html

    def decide():
        approval_services.approval_decide(
            approval=approval,
            actor=Actor.for_user(teammate.user),
            decision="approve",
            reason="looks right",
        )

    await database_sync_to_async(decide)()
    html = await receive_all(communicator)
    assert f'<li class="inbox-item resolved" id="approval-item-{approval.pk}"' in html
    assert "Approved by rory" in html
    assert 'data-count="0"' in html
    await communicator.disconnect()


async def test_the_approval_page_panel_updates_when_someone_else_decides(agent, owner, teammate):
    execution = await database_sync_to_async(start)(agent)
    approval = await database_sync_to_async(park)(execution)
    communicator, connected, _ = await connect(
        owner, page="approval", ws=agent.workspace_id, id=approval.pk
    )
    assert connected

    def decide():
        approval_services.approval_decide(
            approval=approval,
            actor=Actor.for_user(teammate.user),
            decision="reject",
            reason="too much",
        )

    await database_sync_to_async(decide)()
    html = await receive_all(communicator)
    assert 'id="approval-panel" hx-swap-oob="true"' in html
    assert "Rejected" in html and "by rory" in html and "too much" in html
    await communicator.disconnect()


async def test_list_pages_share_one_load_and_render_of_a_change(agent, viewer, teammate):
    pages = []
    for member, params in ((viewer, {}), (teammate, {}), (viewer, {"status": "failed"})):
        communicator, connected, _ = await connect(
            member, page="executions", ws=agent.workspace_id, insert="1", **params
        )
        assert connected
        pages.append(communicator)
    before = fanout.shared.made
    execution = await database_sync_to_async(start)(agent)
    received = [await receive_all(communicator) for communicator in pages]
    # One load and render of the new row for all three sockets, however many there are...
    assert fanout.shared.made - before == 1
    # ...and each page still decides for itself whether its filters take the row in.
    assert 'hx-swap-oob="afterbegin:#exec-rows"' in received[0]
    assert 'hx-swap-oob="afterbegin:#exec-rows"' in received[1]
    assert "afterbegin" not in received[2] and f'id="exec-{execution.pk}"' in received[2]
    for communicator in pages:
        await communicator.disconnect()


FILTERS = [
    {},
    {"status": "pending"},
    {"status": "running,failed"},
    {"agent_id": "{agent}"},
    {"agent_id": "0190d0c4-0000-7000-8000-000000000000"},
    {"session_id": "sess-1"},
    {"session_id": "sess-2"},
    {"range": "24h"},
    {"created_before": "2000-01-01"},
    {"cost_above": "0"},
    {"metadata": "tier=gold"},
    {"metadata": "tier=silver"},
    {"metadata": "count=3"},
    {"metadata": "count=4"},
    {"metadata": "vip=true"},
    {"metadata": "vip=1"},
    {"metadata": "nested__level=2"},
    {"metadata": "missing=x"},
    {"q": "doub"},
    {"q": "DOUBLER"},
    {"q": "sess-1"},
    {"q": "{pk}"},
    {"q": "nothing-like-it"},
    {"status": "pending", "metadata": "tier=gold", "q": "doub", "range": "1h"},
]


@pytest.mark.parametrize("raw", FILTERS, ids=[str(f) for f in FILTERS])
def test_the_in_memory_filter_match_agrees_with_the_database(agent, raw):
    from django.http import QueryDict

    from executions.selectors import execution_list

    execution = start(
        agent,
        metadata={"tier": "gold", "count": 3, "vip": True, "nested": {"level": 2}},
        session_id="sess-1",
    )
    execution.refresh_from_db()
    params = QueryDict(mutable=True)
    for key, value in raw.items():
        params[key] = value.format(agent=agent.pk, pk=execution.pk)
    filters = fanout.ListFilters.from_params(params).now()
    in_memory = fanout.row_matches(execution, filters)
    assert in_memory is not None
    in_database = execution_list(workspace=agent.workspace, filters=filters).filter(pk=execution.pk)
    assert in_memory == in_database.exists()


def test_a_metadata_lookup_is_left_to_the_database(agent):
    execution = start(agent, metadata={"tier": "gold"})
    from django.http import QueryDict

    filters = fanout.ListFilters.from_params(QueryDict("metadata=tier__startswith%3Dgo")).now()
    assert fanout.row_matches(execution, filters) is None
    assert fanout.row_matches_in_database(execution, filters)


async def test_a_repeated_message_never_reuses_a_load_from_before_it_arrived():
    import time

    shared = fanout.Shared()
    loads = []

    def make():
        loads.append(1)
        return len(loads)

    first = await shared.get("k", make, fresh_after=time.monotonic(), gather=0.001)
    # The same key again (an approval's second vote sends the same message): a new load.
    second = await shared.get("k", make, fresh_after=time.monotonic(), gather=0.001)
    # A copy of a message that arrived before the last load began shares it.
    earlier = time.monotonic() - 60
    third = await shared.get("k", make, fresh_after=earlier, gather=0.001)
    assert (first, second, third) == (1, 2, 2)
