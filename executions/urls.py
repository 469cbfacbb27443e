from django.contrib.auth import views as auth_views
from django.urls import include, path

from executions import views

urlpatterns = [
    path(
        "login/",
        auth_views.LoginView.as_view(template_name="login.html", redirect_authenticated_user=True),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", views.overview, name="overview"),
    path("workspace/switch/", views.workspace_switch, name="workspace_switch"),
    path("executions/", views.execution_list, name="execution_list"),
    path("executions/changes/", views.execution_list_changes, name="execution_list_changes"),
    path("executions/views/", views.savedview_create, name="savedview_create"),
    path(
        "executions/views/<uuid:view_id>/delete/",
        views.savedview_delete,
        name="savedview_delete",
    ),
    path("executions/<str:execution_id>/", views.execution_detail, name="execution_detail"),
    path("executions/<str:execution_id>/cancel/", views.execution_cancel, name="execution_cancel"),
    path("executions/<str:execution_id>/retry/", views.execution_retry, name="execution_retry"),
    path("executions/<str:execution_id>/resume/", views.execution_resume, name="execution_resume"),
    path("agents/", views.agent_list, name="agent_list"),
    path("agents/<str:agent_id>/", views.agent_detail, name="agent_detail"),
    path("settings/", views.settings_keys, name="settings_keys"),
    path("settings/members/", views.settings_members, name="settings_members"),
    path("settings/retention/", views.settings_retention, name="settings_retention"),
    path("", include("approvals.urls")),
]
