from django.urls import path

from approvals import views

urlpatterns = [
    path("approvals/", views.inbox, name="approval_inbox"),
    path("approvals/bulk/", views.approval_bulk, name="approval_bulk"),
    path("approvals/<str:approval_id>/", views.approval_detail, name="approval_detail"),
    path("approvals/<str:approval_id>/decide/", views.approval_decide, name="approval_decide"),
    path("approvals/<str:approval_id>/comments/", views.approval_comment, name="approval_comment"),
    path("settings/webhooks/", views.settings_webhooks, name="settings_webhooks"),
]
