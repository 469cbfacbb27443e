"""ASGI entry point: HTTP through Django, websockets through Channels (session auth, origin
checked). In the embedded default the worker also starts here, on the server's own loop."""

import gc
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.asgi import get_asgi_application  # noqa: E402
from django.template.loader import get_template  # noqa: E402

# The dashboard's stylesheet and scripts (and htmx from django-htmx) are served by the app
# itself (ServeStatic, first in MIDDLEWARE, with DEBUG off too), so `make up` needs no separate
# web server; a CDN or proxy may still front /static/.
django_app = get_asgi_application()

from executions import routing  # noqa: E402
from executions.api import fastpath  # noqa: E402
from executions.api.handler import ApiHandler  # noqa: E402
from executions.api.loopcreate import NATIVE_CREATES  # noqa: E402
from executions.api.loopread import LoopRead  # noqa: E402
from executions.compat import fast as compat_fast  # noqa: E402
from executions.engine.embedded import EmbeddedWorkerLifespan  # noqa: E402
from executions.middleware import DepartedClientGuard, KeepAliveBalance  # noqa: E402

# The dashboard pages a fresh process serves first (compiled before the freeze below).
PAGE_TEMPLATES = (
    "executions/list.html",
    "executions/overview.html",
    "executions/detail.html",
    "approvals/inbox.html",
    "agents/list.html",
)

# The polled reads, served without ninja's dispatch when they succeed (api/fastpath.py).
FAST_READS = {
    "api:execution_get": fastpath.execution_get,
    "julep:execution_get": compat_fast.julep_execution_get,
    "moderately:execution_retrieve": compat_fast.moderately_execution_retrieve,
    "discuro-retrieve": compat_fast.discuro_retrieve,
}

# Their plain successful case answered on the event loop, on PostgreSQL (api/loopread.py).
LOOP_READS = {
    "api:execution_get": LoopRead(fastpath.execution_check, fastpath.execution_render),
    "julep:execution_get": LoopRead(compat_fast.julep_check, compat_fast.julep_render),
    "moderately:execution_retrieve": LoopRead(
        compat_fast.moderately_check, compat_fast.moderately_render
    ),
    "discuro-retrieve": LoopRead(
        compat_fast.discuro_check,
        compat_fast.discuro_render,
        locate=compat_fast.discuro_id,
        method="POST",
    ),
}

application = EmbeddedWorkerLifespan(
    ProtocolTypeRouter(
        {
            # API calls skip the dashboard's middleware and Django's per-request thread.
            "http": KeepAliveBalance(
                DepartedClientGuard(
                    ApiHandler(
                        fallback=django_app,
                        fast_reads=FAST_READS,
                        loop_reads=LOOP_READS,
                        # The creates' plain successful case on the loop too (loopcreate.py).
                        loop_creates=NATIVE_CREATES,
                    )
                ),
                enabled=settings.WEB_BALANCE_CONNECTIONS,
            ),
            "websocket": AllowedHostsOriginValidator(
                AuthMiddlewareStack(URLRouter(routing.websocket_urlpatterns))
            ),
        }
    )
)

if settings.WEB_GC_FREEZE:
    # A full (gen-2) collection walks every tracked object, and start-up leaves ~187,000 of
    # them (Django, the models, the URLconf, ninja's schemas): 150–260 ms with the process
    # stopped, under load a few times a minute (docs/performance-history.md, "Create tail"). Frozen,
    # they are never walked (nor freed: they live as long as the process); a full collection
    # then takes ~5–9 ms. Each web process (uvicorn --workers spawns them) imports this module.
    # The dashboard's page templates are compiled first, so a fresh process's first list or
    # overview does not pay for it (66 / 126 ms of CPU against 13 / 20 warm) and the compiled
    # nodes are frozen with the rest.
    for name in PAGE_TEMPLATES:
        get_template(name)
    gc.collect()
    gc.freeze()
