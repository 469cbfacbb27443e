"""The demo agents `make up` seeds (all on the offline builtin model, so no key is needed):

- `refund-desk`: a workflow taking {"order_id", "amount"}; above 100 it parks for approval.
- `research-assistant`: an agent taking {"question"} that calls tools and streams its answer.
- `python-greeter`: a Python agent taking {"name"} (executions/demo_agents.py).

`demo_seed` is idempotent: run it again and nothing changes unless a definition here changed,
in which case the agent gets a new current version.
"""

from __future__ import annotations

import random
import threading
import time
from decimal import Decimal
from typing import Any

from django.db import transaction

from approvals.models import Approval
from executions import services
from executions.engine import python_agents
from executions.models import Agent, AgentType, DemoOrder, Workspace

DEMO_ORDERS = [
    ("A-1001", "Ada Lovelace", "Analytical engine gears", Decimal("1240.00")),
    ("A-1002", "Grace Hopper", "Compiler manual", Decimal("89.90")),
    ("A-1003", "Alan Turing", "Tape, 10 rolls", Decimal("450.00")),
    ("A-1004", "Edsger Dijkstra", "Fountain pen", Decimal("310.50")),
]

REFUND_DESK: dict[str, Any] = {
    "description": "Refunds an order; amounts above 100 need a reviewer's approval.",
    "input_schema": {
        "type": "object",
        "properties": {
            "order_id": {"type": "string", "minLength": 1},
            "amount": {"type": "number", "exclusiveMinimum": 0},
        },
        "required": ["order_id", "amount"],
    },
    "config": {
        "model": {"provider": "builtin", "name": "refund-writer", "chunk_delay": 0.02},
        "tools": ["order_lookup", "order_refund"],
        "limits": {"max_steps": 40, "timeout_seconds": 600},
        "main": [
            {
                "label": "look up the order",
                "tool": "order_lookup",
                "arguments": {"order_id": "$ inputs['order_id']"},
            },
            {
                "label": "approval gate",
                "if": "$ inputs['amount'] > 100",
                "then": {
                    "approval": {
                        "title": "Refund {{ inputs['amount'] }} on order {{ inputs['order_id'] }}?",
                        "description": (
                            "**{{ _.get('customer', 'unknown customer') }}** asks for a refund of "
                            "**{{ inputs['amount'] }}** on order `{{ inputs['order_id'] }}` "
                            "(order total {{ _.get('total', '?') }}). Edit the amount to refund "
                            "less."
                        ),
                        "payload": {
                            "order_id": "$ inputs['order_id']",
                            "amount": "$ inputs['amount']",
                        },
                        "payload_schema": {
                            "type": "object",
                            "properties": {
                                "order_id": {"type": "string"},
                                "amount": {"type": "number", "exclusiveMinimum": 0},
                            },
                            "required": ["order_id", "amount"],
                        },
                        "allowed_actions": ["approve", "reject", "edit"],
                        "assignee_roles": ["reviewer", "admin"],
                        # Short, so a demo left running does not keep filling the inbox.
                        "timeout_seconds": 600,
                        "on_timeout": "reject",
                    }
                },
                "else": {
                    "evaluate": {
                        "order_id": "$ inputs['order_id']",
                        "amount": "$ inputs['amount']",
                    }
                },
            },
            {
                "label": "refund",
                "tool": "order_refund",
                "arguments": {
                    "order_id": "$ _['order_id']",
                    "amount": "$ _['amount']",
                    "reason": "refund desk",
                },
            },
            {
                # A refused refund (more than is left on the order…) fails the run, so the demo
                # shows a failure as one instead of a green Completed.
                "label": "refund refused",
                "if": "$ 'error' in _",
                "then": {"error": "Refund refused: {{ _['error'] }}"},
            },
            {
                "label": "confirmation note",
                "prompt": (
                    "Refund of {{ steps[2].output.get('refunded', 0) }} on order "
                    "{{ inputs['order_id'] }}: {{ steps[2].output.get('error', 'done') }}."
                ),
                "unwrap": True,
            },
            {
                "return": {
                    "order_id": "$ inputs['order_id']",
                    "refund": "$ steps[2].output",
                    "note": "$ _",
                }
            },
        ],
    },
}

RESEARCH_ASSISTANT: dict[str, Any] = {
    "description": "Answers questions with a calculator and the order book (simulated model).",
    "input_schema": {
        "type": "object",
        "properties": {"question": {"type": "string", "minLength": 1}},
        "required": ["question"],
    },
    "config": {
        "model": {
            "provider": "builtin",
            "name": "research-sim",
            "chunk_delay": 0.03,
            "script": [
                {
                    "thinking": "I will check the numbers with the calculator and the order book.",
                    "content": "Let me look that up. ",
                    "tool_calls": [
                        {"name": "calculator", "arguments": {"expression": "17 * 23"}},
                        {"name": "order_lookup", "arguments": {"order_id": "A-1001"}},
                    ],
                },
                {
                    "content": (
                        'You asked: "{last_user}". I checked with my tools and found: '
                        "{tool_results}. That is everything I could find."
                    )
                },
            ],
        },
        "system_prompt": "You are a careful research assistant. Use tools when they help.",
        "tools": ["calculator", "order_lookup", "http_get"],
        "max_steps": 5,
        "limits": {"max_tokens": 20000, "timeout_seconds": 300},
    },
}

PYTHON_GREETER_MODEL = {"provider": "builtin", "name": "greeter-sim", "chunk_delay": 0.02}


@transaction.atomic
def demo_seed(*, workspace: Workspace, user: Any = None) -> dict[str, Agent]:
    for order_id, customer, item, total in DEMO_ORDERS:
        DemoOrder.objects.get_or_create(
            workspace=workspace,
            order_id=order_id,
            defaults={"customer": customer, "item": item, "total": total},
        )
    agents = {
        "refund-desk": _ensure(workspace, "refund-desk", AgentType.WORKFLOW, REFUND_DESK, user),
        "research-assistant": _ensure(
            workspace, "research-assistant", AgentType.AGENT, RESEARCH_ASSISTANT, user
        ),
    }
    agents.update(sync_python_agents(workspace=workspace, user=user))
    return agents


def sync_python_agents(*, workspace: Workspace, user: Any = None) -> dict[str, Agent]:
    """Give every registered Python agent an Agent row (type python) so it is listed and
    runnable, with a version carrying its input schema (checked when an execution starts)."""
    python_agents.autodiscover()
    agents = {}
    for name, registered in python_agents.REGISTRY.items():
        spec = {
            "description": registered.description,
            "input_schema": registered.input_schema,
            "output_schema": registered.output_schema,
            "config": {
                "python": name,
                "model": registered.config.get("model") or PYTHON_GREETER_MODEL,
            },
        }
        agents[name] = _ensure(workspace, name, AgentType.PYTHON, spec, user)
    return agents


def _ensure(workspace: Workspace, name: str, type: str, spec: dict[str, Any], user: Any) -> Agent:
    agent = Agent.objects.for_workspace(workspace).filter(name=name).first()
    if agent is None:
        agent = services.agent_create(
            workspace=workspace, name=name, type=type, description=spec.get("description", "")
        )
    current = agent.current_version
    if (
        current is None
        or current.config != spec["config"]
        or current.input_schema != spec.get("input_schema")
        or current.output_schema != spec.get("output_schema")
    ):
        services.agent_version_create(
            agent=agent,
            config=spec["config"],
            input_schema=spec.get("input_schema"),
            output_schema=spec.get("output_schema"),
            message="demo definition",
            set_current=True,
            created_by=user,
        )
        agent.refresh_from_db()
    return agent


TRAFFIC_NAMES = ["Ada", "Grace", "Linus", "Barbara", "Ken", "Margaret", "Dennis", "Frances"]
TRAFFIC_QUESTIONS = [
    "What is 17 * 23?",
    "Look up order A-1001 and tell me its total.",
    "How much is 12.5% of 480?",
    "What is the status of order A-1002?",
]
# Refunds above the approval threshold are only started while the inbox holds fewer than
# this many, so a demo left running does not bury reviewers.
MAX_PENDING_DEMO_APPROVALS = 5
# Share of demo refunds whose order is topped up first, so roughly one in ten is refused.
RESTOCK_SHARE = 0.9


def demo_traffic(
    *,
    workspace: Workspace,
    rate: float,
    duration: float = 0.0,
    seed: int | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Start a mix of demo executions at `rate` per second until `duration` passes (0: until
    `stop` is set). Returns how many were started."""
    agents = demo_seed(workspace=workspace)
    rng = random.Random(seed)
    interval = 1.0 / rate
    deadline = time.monotonic() + duration if duration else None
    stop = stop or threading.Event()
    started = 0
    next_at = time.monotonic()
    while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
        name, payload = _pick(rng)
        if name == "refund-desk" and payload["amount"] > 100:
            waiting = Approval.objects.filter(workspace=workspace, status="pending").count()
            if waiting >= MAX_PENDING_DEMO_APPROVALS:
                payload["amount"] = 40
        if name == "refund-desk" and rng.random() < RESTOCK_SHARE:
            _restock(workspace, payload["order_id"], payload["amount"])
        agent = agents.get(name)
        if agent is not None:
            services.execution_start(
                workspace=workspace,
                agent=agent,
                input=payload,
                metadata={"source": "demo_traffic"},
            )
            started += 1
        next_at += interval
        stop.wait(max(0.0, next_at - time.monotonic()))
    return started


def _restock(workspace: Workspace, order_id: str, amount: float) -> None:
    """Most demo refunds fit what is left on their order (the others fail, as they should):
    an order with too little left is reset, as if the shop had taken a new one."""
    order = DemoOrder.objects.filter(workspace=workspace, order_id=order_id).first()
    if order is not None and order.total - order.refunded < Decimal(str(amount)):
        DemoOrder.objects.filter(pk=order.pk).update(refunded=0, refund_count=0, status="paid")


def _pick(rng: random.Random) -> tuple[str, dict[str, Any]]:
    roll = rng.random()
    if roll < 0.4:
        order = rng.choice(["A-1001", "A-1002", "A-1003", "A-1004"])
        amount = rng.choice([15, 40, 80, 120, 250])
        return "refund-desk", {"order_id": order, "amount": amount}
    if roll < 0.75:
        return "research-assistant", {"question": rng.choice(TRAFFIC_QUESTIONS)}
    return "python-greeter", {"name": rng.choice(TRAFFIC_NAMES)}
