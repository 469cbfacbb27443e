"""`manage.py apikey create|list|revoke`: manage API keys from the shell."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from executions import selectors, services
from executions.errors import StewardError
from executions.models import Role, Workspace


class Command(BaseCommand):
    help = "Create, list or revoke API keys."

    def add_arguments(self, parser: Any) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create", help="create a key and print it alone on stdout")
        create.add_argument("--name", required=True)
        create.add_argument("--role", choices=Role.values, default=Role.ADMIN)
        create.add_argument("--workspace", default="default", help="workspace slug")
        listing = sub.add_parser("list", help="list keys (prefix, name, role, state)")
        listing.add_argument("--workspace", default=None)
        revoke = sub.add_parser("revoke", help="revoke the key with this prefix")
        revoke.add_argument("prefix")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            getattr(self, f"do_{options['action']}")(options)
        except StewardError as exc:
            raise CommandError(exc.message) from None

    def do_create(self, options: dict[str, Any]) -> None:
        if not options["name"].strip():
            raise CommandError("--name must not be empty")
        workspace, created = services.workspace_get_or_create(slug=options["workspace"])
        if created:
            self.stderr.write(f"created workspace {workspace.slug}")
        _, raw = services.apikey_create(
            workspace=workspace, name=options["name"], role=options["role"]
        )
        self.stdout.write(raw)

    def do_list(self, options: dict[str, Any]) -> None:
        workspace = None
        if options["workspace"]:
            workspace = Workspace.objects.filter(slug=options["workspace"]).first()
            if workspace is None:
                raise CommandError(f"no workspace {options['workspace']!r}")
        for key in selectors.apikey_list(workspace=workspace):
            state = f"revoked {key.revoked_at:%Y-%m-%d}" if key.revoked_at else "active"
            used = f"{key.last_used_at:%Y-%m-%d %H:%M}" if key.last_used_at else "never"
            self.stdout.write(
                f"{key.prefix}\t{key.workspace.slug}\t{key.name}\t{key.role}\t{state}\tused {used}"
            )

    def do_revoke(self, options: dict[str, Any]) -> None:
        key = services.apikey_revoke(workspace=None, prefix=options["prefix"])
        self.stdout.write(f"revoked {key.prefix} ({key.name})")
