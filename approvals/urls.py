from django.urls import path

from approvals import pages

urlpatterns = [
    path("approvals/", pages.inbox, name="approval_inbox"),
    path("approvals/bulk/", pages.approval_bulk, name="approval_bulk"),
    path("approvals/<str:approval_id>/", pages.approval_detail, name="approval_detail"),
    path("approvals/<str:approval_id>/decide/", pages.approval_decide, name="approval_decide"),
    path("approvals/<str:approval_id>/comments/", pages.approval_comment, name="approval_comment"),
    path("settings/webhooks/", pages.settings_webhooks, name="settings_webhooks"),
]
