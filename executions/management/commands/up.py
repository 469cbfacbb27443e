"""`manage.py up`: prepare the embedded default and serve it (what `make up` runs).

Migrates, creates once a workspace, an admin and an API key, seeds the demo agents, prints the
URL, the login and (only when created) the key, then serves HTTP + websockets with daphne and
runs the worker inside the same process.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import threading
from pathlib import Path
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.db import transaction

from executions import demo as demo_module
from executions import services
from executions.models import ApiKey, Role, Workspace

CREDENTIALS_FILE = Path(settings.BASE_DIR) / ".steward-admin"


class Command(BaseCommand):
    help = "Set up the embedded default (SQLite, one process, demo data) and serve it."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
        parser.add_argument("--no-serve", action="store_true", help="set up, print, and exit")
        parser.add_argument("--no-demo", action="store_true", help="skip the demo agents")

    def handle(self, *args: Any, **options: Any) -> None:
        call_command("migrate", interactive=False, verbosity=0)
        username, password, key = self.bootstrap(demo=not options["no_demo"])
        url = f"http://{options['host']}:{options['port']}/"
        out = self.stdout
        out.write("")
        out.write(self.style.SUCCESS("Steward is ready."))
        out.write(f"  URL:      {url}")
        out.write(f"  Login:    {username} / {password}")
        if key:
            out.write(f"  API key:  {key}   (shown once; `manage.py apikey create` makes more)")
        else:
            out.write(
                "  API key:  created earlier (shown once); `manage.py apikey create --name me`"
            )
        example_key = key or "<your key>"
        out.write("  Try:")
        out.write(f"    curl -s -H 'X-API-Key: {example_key}' {url}api/v1/agents")
        out.write(f"    API docs: {url}api/v1/docs")
        out.write("")
        if not options["no_serve"]:
            # A little live traffic so a newcomer sees executions move (DEMO_TRAFFIC_RATE=0
            # turns it off; `manage.py demo_traffic --rate R` makes more).
            rate = 0.0 if options["no_demo"] else float(os.environ.get("DEMO_TRAFFIC_RATE", "0.1"))
            if rate > 0:
                out.write(
                    f"  Demo traffic: ON, a demo run every {1 / rate:.0f} s; refunds over 100 "
                    "wait for approval (10 min, then rejected)."
                )
                out.write(
                    "    Turn it off: DEMO_TRAFFIC_RATE=0 make up  (or `manage.py up --no-demo`)"
                )
            serve(options["host"], options["port"], demo_rate=rate)

    def bootstrap(self, *, demo: bool) -> tuple[str, str, str | None]:
        User = get_user_model()
        username = os.environ.get("ADMIN_USERNAME") or "admin"
        with transaction.atomic():
            workspace, _ = services.workspace_get_or_create(slug="default", name="Default")
            user = User.objects.filter(username=username).first()
            password = os.environ.get("ADMIN_PASSWORD") or _remembered_password(username)
            if user is None:
                user = User.objects.create_superuser(
                    username=username, password=password, email=f"{username}@localhost"
                )
            elif os.environ.get("ADMIN_PASSWORD") and not user.check_password(password):
                user.set_password(password)
                user.save(update_fields=["password"])
            services.membership_set(workspace=workspace, user=user, role=Role.ADMIN)
            raw_key = None
            if not ApiKey.objects.filter(workspace=workspace, name="make-up").exists():
                _, raw_key = services.apikey_create(
                    workspace=workspace, name="make-up", role=Role.ADMIN, created_by=user
                )
        if demo:
            demo_module.demo_seed(workspace=workspace, user=user)
        return username, password, raw_key


def _remembered_password(username: str) -> str:
    """A generated password, kept in a git-ignored file so the next `make up` prints it again."""
    try:
        stored_user, _, stored = CREDENTIALS_FILE.read_text().strip().partition(":")
        if stored_user == username and stored:
            return stored
    except FileNotFoundError:
        pass
    password = secrets.token_urlsafe(12)
    CREDENTIALS_FILE.write_text(f"{username}:{password}\n")
    CREDENTIALS_FILE.chmod(0o600)
    return password


def serve(host: str, port: int, *, demo_rate: float = 0.0) -> None:
    # Imported only when serving: daphne installs Twisted's asyncio reactor on import, which the
    # other uses of this module (tests calling its setup functions) must not trigger; the ASGI
    # application and the embedded worker come with it.
    from daphne.endpoints import build_endpoint_description_strings
    from daphne.server import Server
    from twisted.internet import reactor

    from config.asgi import application
    from executions.engine import embedded

    traffic_stop = threading.Event()

    def start_traffic() -> None:
        # On the server loop, like the worker, so its live events reach the in-memory layer.
        def traffic() -> None:
            workspace = Workspace.objects.get(slug="default")
            demo_module.demo_traffic(workspace=workspace, rate=demo_rate, stop=traffic_stop)

        asyncio.get_running_loop().create_task(sync_to_async(traffic, thread_sensitive=False)())

    def ready() -> None:
        # Called before the reactor's loop runs; start the worker on that loop once it does.
        reactor._asyncioEventloop.call_soon(embedded.ensure_started)
        if demo_rate > 0:
            reactor._asyncioEventloop.call_later(2, start_traffic)

    def stopping() -> Any:
        # Ctrl-C: the worker stops claiming, lets runs reach a step boundary and hands back
        # the rest; the reactor waits for that on a thread (its loop keeps serving the
        # worker's live events meanwhile), then exits.
        from twisted.internet.threads import deferToThread  # after the reactor is installed

        traffic_stop.set()
        return deferToThread(embedded.stop_and_wait)

    reactor.addSystemEventTrigger("before", "shutdown", stopping)

    Server(
        application=application,
        endpoints=build_endpoint_description_strings(host=host, port=port),
        ready_callable=ready,
        verbosity=0,
    ).run()
