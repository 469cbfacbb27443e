"""OpenAPI links in the native API's document: from each operation that creates a resource to
the operations that take the new resource's id.

A client, or a client generator, follows them from a create to what acts on the new resource
without reading the prose. They are written here, from a table, not inferred: schemathesis's
own inference passed one resource's id for another's (an agent's id as its task's) and then
reported the honest 404 as a failure (docs/decisions.md, "API").
"""

from __future__ import annotations

from typing import Any

# (the creating operation's path, the created resource's item path prefix, its path parameter)
# — each 201 reply carries the new resource as `data`, its id at `data.id`.
PRODUCERS = (
    ("/api/v1/agents", "/api/v1/agents/{agent_id}", "agent_id"),
    ("/api/v1/agents/{agent_id}/versions", "/api/v1/agents/{agent_id}/versions/{version_id}",
     "version_id"),
    ("/api/v1/executions", "/api/v1/executions/{execution_id}", "execution_id"),
    ("/api/v1/agents/{agent_id}/execute", "/api/v1/executions/{execution_id}", "execution_id"),
    ("/api/v1/executions/{execution_id}/approvals", "/api/v1/approvals/{approval_id}",
     "approval_id"),
    ("/api/v1/webhooks", "/api/v1/webhooks/{webhook_id}", "webhook_id"),
)  # fmt: skip
CREATED = "201"
METHODS = ("get", "put", "post", "patch", "delete")


def add_links(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` with a `links` map on each producer's 201 reply: one link per operation under
    the created resource's item path whose path parameters are all known — the new id, and
    any the producer's own path had (an agent's versions take the agent's id from the
    request)."""
    paths = schema.get("paths", {})
    for source, item, param in PRODUCERS:
        reply = paths.get(source, {}).get("post", {}).get("responses", {})
        created = reply.get(CREATED) or reply.get(int(CREATED))
        if created is None:
            continue
        known = {name: f"$request.path.{name}" for name in _params(source)}
        known[param] = "$response.body#/data/id"
        links = {}
        for path, operations in paths.items():
            if not (path == item or path.startswith(item + "/")):
                continue
            if not set(_params(path)) <= set(known):
                continue
            for method in METHODS:
                operation = operations.get(method)
                if operation is None or "operationId" not in operation:
                    continue
                links[operation["operationId"]] = {
                    "operationId": operation["operationId"],
                    "parameters": {name: known[name] for name in _params(path)},
                }
        if links:
            created["links"] = links
    return schema


def _params(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{") and part.endswith("}")]
