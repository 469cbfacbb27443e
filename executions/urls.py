from django.contrib.auth import views as auth_views
from django.urls import include, path

from executions.pages import (
    agents,
    execution_detail,
    executions_list,
    lockouts,
    overview,
    settings,
    workspace,
)

urlpatterns = [
    path(
        "login/",
        auth_views.LoginView.as_view(template_name="login.html", redirect_authenticated_user=True),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", overview.overview, name="overview"),
    path("workspace/switch/", workspace.workspace_switch, name="workspace_switch"),
    path("executions/", executions_list.execution_list, name="execution_list"),
    path(
        "executions/changes/",
        executions_list.execution_list_changes,
        name="execution_list_changes",
    ),
    path("executions/views/", executions_list.savedview_create, name="savedview_create"),
    path(
        "executions/views/<uuid:view_id>/delete/",
        executions_list.savedview_delete,
        name="savedview_delete",
    ),
    path(
        "executions/<str:execution_id>/",
        execution_detail.execution_detail,
        name="execution_detail",
    ),
    path(
        "executions/<str:execution_id>/tool-results/<str:call_id>/",
        execution_detail.execution_tool_result,
        name="execution_tool_result",
    ),
    path(
        "executions/<str:execution_id>/cancel/",
        execution_detail.execution_cancel,
        name="execution_cancel",
    ),
    path(
        "executions/<str:execution_id>/retry/",
        execution_detail.execution_retry,
        name="execution_retry",
    ),
    path(
        "executions/<str:execution_id>/resume/",
        execution_detail.execution_resume,
        name="execution_resume",
    ),
    path("agents/", agents.agent_list, name="agent_list"),
    path("agents/<str:agent_id>/", agents.agent_detail, name="agent_detail"),
    path("settings/", settings.settings_keys, name="settings_keys"),
    path("settings/members/", settings.settings_members, name="settings_members"),
    path(
        "settings/members/<int:user_id>/unlock/",
        lockouts.settings_member_unlock,
        name="settings_member_unlock",
    ),
    path("settings/retention/", settings.settings_retention, name="settings_retention"),
    path("", include("approvals.urls")),
]
