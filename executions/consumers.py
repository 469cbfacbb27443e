"""Websocket consumer for live pages: session auth, same-origin (checked in asgi.py), and only
groups of workspaces the user belongs to."""

from __future__ import annotations

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from executions import events


class LiveConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        self.workspace_ids = await self._workspace_ids(user)
        self.groups_joined: list[str] = []
        for workspace_id in self.workspace_ids:
            await self._join(events.workspace_executions_group(workspace_id))
            await self._join(events.workspace_approvals_group(workspace_id))
        await self.accept()

    async def _join(self, group: str) -> None:
        await self.channel_layer.group_add(group, self.channel_name)
        self.groups_joined.append(group)

    async def disconnect(self, code: int) -> None:
        for group in getattr(self, "groups_joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)

    @database_sync_to_async
    def _workspace_ids(self, user) -> list[str]:
        from executions.models import Membership

        return [
            str(w)
            for w in Membership.objects.filter(user=user).values_list("workspace_id", flat=True)
        ]

    async def execution_changed(self, message: dict) -> None:
        await self.send_json(message)

    async def execution_stream(self, message: dict) -> None:
        await self.send_json(message)

    async def approval_changed(self, message: dict) -> None:
        await self.send_json(message)
