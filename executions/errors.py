"""Domain errors. The API layers turn each into a status code and the uniform error body."""

from __future__ import annotations

from typing import Any


class StewardError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, details: Any = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        if code:
            self.code = code


class BadRequest(StewardError):
    status = 400
    code = "bad_request"


class Forbidden(StewardError):
    status = 403
    code = "forbidden"


class NotFound(StewardError):
    status = 404
    code = "not_found"


class Expired(NotFound):
    """The object existed but retention purged it."""

    code = "expired"


class Conflict(StewardError):
    status = 409
    code = "conflict"


class ValidationFailed(StewardError):
    """422: `details` is a list of {"field": "...", "message": "..."}, one per violation."""

    status = 422
    code = "validation_error"


def field_error(field: str, message: str) -> dict[str, str]:
    return {"field": field, "message": message}
