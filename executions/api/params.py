"""Query parameters shared by the list operations, declared so the OpenAPI document lists them
with their types and bounds (a page number beyond a 32-bit integer is a 422, not a database
error)."""

from __future__ import annotations

from ninja import Field, Schema

from executions.selectors import MAX_LIMIT
from executions.validation import INT_MAX


class PageParams(Schema):
    page: int = Field(1, ge=1, le=INT_MAX, description="1-based page number")
    limit: int | None = Field(None, ge=1, le=MAX_LIMIT, description="rows per page (default 20)")
    page_size: int | None = Field(None, ge=1, le=MAX_LIMIT, description="alias of limit")

    @property
    def size(self) -> int:
        return self.limit or self.page_size or 20
