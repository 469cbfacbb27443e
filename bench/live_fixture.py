"""The live bench's fixture (a fresh workspace, a logged-in admin, an external agent and an
approval workflow, made through the services in the bench's process) and the browser-like login."""

from __future__ import annotations

import os
import time

# Parks on an approval; once approved the worker records `evaluate` at once (its pickup time),
# then sleeps so the execution is still `running` when the dashboard re-reads it.
APPROVAL_WORKFLOW = {
    "main": [
        {"approval": {"title": "Bench: continue?", "payload": {"n": "$ inputs['n']"}}},
        {"evaluate": {"picked_up": "$ True"}},
        {"sleep": {"seconds": 2}},
        {"return": {"ok": "$ True"}},
    ]
}


class Fixture:
    """A fresh workspace, a logged-in admin, an external agent and an approval workflow."""

    def __init__(self, tag: str) -> None:
        from executions import services
        from executions.models import Role

        self.services = services
        self.workspace, _ = services.workspace_get_or_create(slug=tag, name=f"Bench {tag}")
        self.username, self.password = tag, f"pw-{tag}-{os.getpid()}"
        user = services.user_create(username=self.username, password=self.password)
        services.membership_set(workspace=self.workspace, user=user, role=Role.ADMIN)
        self.external = services.agent_create(
            workspace=self.workspace, name="live-external", type="external"
        )
        self.workflow = services.agent_create(
            workspace=self.workspace, name="live-approval", type="workflow"
        )
        services.agent_version_create(
            agent=self.workflow, config=APPROVAL_WORKFLOW, set_current=True
        )
        self.workflow.refresh_from_db()

    def pending_executions(self, count: int) -> list[str]:
        """Executions the driver will move pending → running (one move each)."""
        return [
            str(
                self.services.execution_start(
                    workspace=self.workspace, agent=self.external, input={"n": n}
                )[0].pk
            )
            for n in range(count)
        ]

    def parked_approvals(self, count: int, timeout: float = 60) -> list[tuple[str, str]]:
        """(approval id, execution id) of workflow executions the worker parked on approval."""
        from approvals.models import Approval

        ids = [
            self.services.execution_start(
                workspace=self.workspace, agent=self.workflow, input={"n": n}
            )[0].pk
            for n in range(count)
        ]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = list(
                Approval.objects.filter(execution_id__in=ids, status="pending").values_list(
                    "pk", "execution_id"
                )
            )
            if len(found) == count:
                return [(str(a), str(e)) for a, e in found]
            time.sleep(0.1)
        raise SystemExit(f"only {len(found)}/{count} executions parked on approval in time")

    @staticmethod
    def worker_pickups(clicks: dict[str, float]) -> list[float]:
        """ms from each click until the worker recorded the first step after the approval."""
        from executions.models import Transition

        out = []
        for execution_id, clicked in clicks.items():
            approved = (
                Transition.objects.filter(execution_id=execution_id, type="approved")
                .order_by("seq")
                .first()
            )
            if approved is None:
                continue
            after = (
                Transition.objects.filter(execution_id=execution_id, seq__gt=approved.seq)
                .order_by("seq")
                .first()
            )
            if after is not None:
                out.append((after.created_at.timestamp() - clicked) * 1000)
        return out


def login(base: str, username: str, password: str) -> tuple[str, str]:
    """Log in through the login form like a browser: returns (sessionid, csrftoken)."""
    import httpx

    with httpx.Client(base_url=base, timeout=30, follow_redirects=False) as client:
        client.get("/login/").raise_for_status()
        csrf = client.cookies["csrftoken"]
        reply = client.post(
            "/login/",
            data={"username": username, "password": password, "csrfmiddlewaretoken": csrf},
            headers={"Origin": base, "Referer": f"{base}/login/"},
        )
        if reply.status_code != 302 or "sessionid" not in client.cookies:
            raise SystemExit(f"login failed: {reply.status_code} {reply.text[:300]}")
        return client.cookies["sessionid"], client.cookies["csrftoken"]
