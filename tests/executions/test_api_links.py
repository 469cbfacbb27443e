"""The native API's OpenAPI links (executions/api/links.py): each created resource's reply
points at the operations that act on it, with every path parameter those need."""

from __future__ import annotations

import pytest

from config.api import api


@pytest.fixture(scope="module")
def document() -> dict:
    return api.get_openapi_schema()


def operations(document: dict) -> dict[str, str]:
    return {
        op["operationId"]: path
        for path, ops in document["paths"].items()
        for op in ops.values()
        if isinstance(op, dict) and "operationId" in op
    }


def test_a_created_execution_links_to_what_acts_on_it(document):
    links = document["paths"]["/api/v1/executions"]["post"]["responses"][201]["links"]
    targets = {operations(document)[link["operationId"]] for link in links.values()}
    assert "/api/v1/executions/{execution_id}" in targets
    assert "/api/v1/executions/{execution_id}/approvals" in targets
    assert "/api/v1/executions/{execution_id}/cancel" in targets
    assert all(
        link["parameters"] == {"execution_id": "$response.body#/data/id"} for link in links.values()
    )


def test_every_link_names_an_operation_and_fills_its_path(document):
    ops = operations(document)
    found = 0
    for path, methods in document["paths"].items():
        for op in methods.values():
            for code, reply in op.get("responses", {}).items():
                for link in reply.get("links", {}).values():
                    found += 1
                    assert str(code) == "201"
                    target = ops[link["operationId"]]
                    needed = {part[1:-1] for part in target.split("/") if part.startswith("{")}
                    assert set(link["parameters"]) == needed, (path, target)
                    for source in link["parameters"].values():
                        assert (
                            source == "$response.body#/data/id"
                            or source[len("$request.path.") :] in path
                        ), (path, source)
    assert found >= 30
