"""Native `/api/v1/approvals` router (thin: parse, call a service or selector, shape the reply)."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from ninja import Router

from approvals import selectors as approval_selectors
from approvals.serializers import approval_out
from executions import selectors

router = Router(tags=["approvals"])


@router.get("", summary="List approvals")
def approval_list(request: HttpRequest, status: str | None = None):
    page, limit = selectors.page_params(request.GET)
    approvals = approval_selectors.approval_list(workspace=request.workspace, status=status)
    result = selectors.paginate(approvals, page=page, limit=limit)
    return JsonResponse({"data": [approval_out(a) for a in result.items], "meta": result.meta()})


@router.get("/{approval_id}", summary="Get an approval")
def approval_get(request: HttpRequest, approval_id: str):
    approval = approval_selectors.approval_get(workspace=request.workspace, approval_id=approval_id)
    return JsonResponse({"data": approval_out(approval)})
