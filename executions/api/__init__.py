"""The native `/api/v1` routers, one module per resource (mounted by `config/api.py`), and
`schemas.py` with the request and response shapes the OpenAPI document shows."""

from executions.api.common import optional_body, require

__all__ = ["optional_body", "require"]
