"""How ``tierwise serve`` runs the app: uvloop + httptools, one process or several.

With ``workers`` > 1 the command becomes (``exec``) :mod:`tierwise.gateway.supervisor`:
uvicorn's supervisor in a small process without the gateway imported, which starts that
many workers sharing the listening socket; each builds its own app (:func:`worker_server`)
from the same config file and ledger URL (handed over in ``TIERWISE_CONFIG`` /
``TIERWISE_LEDGER_URL``) and drains on SIGTERM as one process does. Limits such as
``max_in_flight`` then hold per process.

Both ways, :func:`client_timeouts` puts the ``[gateway]`` deadlines for slow and idle clients
on the server (:mod:`tierwise.gateway.protocol`), from the settings each process loads.
"""

from __future__ import annotations

import json
import os
import sys
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette

from tierwise.config import Settings, load_settings
from tierwise.gateway.app import create_app
from tierwise.gateway.config import GatewayConfig
from tierwise.gateway.drain import DrainingServer, WorkerDrainingServer
from tierwise.gateway.protocol import timed_protocol

if TYPE_CHECKING:
    import uvicorn


def app_from_environment() -> Starlette:
    """The app of one worker process: settings from the config file and the environment."""
    return create_app(load_settings())


def worker_server(config: uvicorn.Config) -> DrainingServer:
    """A supervised worker's server: its app and ``drain_s`` from the environment."""
    settings = load_settings()
    app = create_app(settings)
    config.app, config.factory = app, False  # the supervisor's config names the factory
    for name, value in client_timeouts(settings.gateway, config.http).items():
        setattr(config, name, value)
    return WorkerDrainingServer(config, app.state.drain, settings.gateway.drain_s)


def fast_loop_options() -> dict[str, str]:
    """uvloop and httptools when installed (the ``gateway`` extra pins both)."""
    return {
        "loop": "uvloop" if find_spec("uvloop") else "asyncio",
        "http": "httptools" if find_spec("httptools") else "h11",
    }


def client_timeouts(gateway: GatewayConfig, http_protocol: object) -> dict[str, Any]:
    """uvicorn options closing slow and idle clients: ``http_protocol`` with the header, body
    and send deadlines, and the idle keep-alive timeout."""
    return {
        "http": timed_protocol(http_protocol, gateway),
        "timeout_keep_alive": gateway.keepalive_timeout_s,
    }


def run(
    settings: Settings,
    *,
    config_path: Path | None,
    ledger_url: str | None,
    access_log: bool,
    drain_s: float,
) -> None:
    """Serve until interrupted; ``settings.gateway.workers`` processes."""
    import uvicorn  # noqa: PLC0415 (optional dependency)

    gateway = settings.gateway
    options: dict[str, Any] = {
        "host": gateway.host,
        "port": gateway.port,
        "access_log": access_log,
        "timeout_graceful_shutdown": drain_s,
        "proxy_headers": False,  # X-Forwarded-* only from [gateway] trusted_proxies (clients.py)
        "backlog": 4096,
        **fast_loop_options(),
    }
    if gateway.workers == 1:
        app = create_app(settings)
        options |= client_timeouts(gateway, options["http"])
        DrainingServer(uvicorn.Config(app, **options), app.state.drain, drain_s).run()
        return
    if config_path is not None:
        os.environ["TIERWISE_CONFIG"] = str(config_path)
    if ledger_url is not None:
        os.environ["TIERWISE_LEDGER_URL"] = ledger_url
    options["workers"] = gateway.workers
    supervisor = [sys.executable, "-m", "tierwise.gateway.supervisor", json.dumps(options)]
    os.execv(sys.executable, supervisor)
