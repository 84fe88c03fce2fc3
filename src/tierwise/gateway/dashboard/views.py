"""The dashboard's HTTP side: the login form, the page, its JSON API and its static files.

::

    GET  /dashboard                  the page (303 to the login form without the admin key)
    GET  /dashboard/login            the login form;  POST: check the key, set the session
                                     (failed key checks — here, and a wrong bearer key on
                                     any endpoint — throttled per address: 429, retry-after)
    POST /dashboard/logout           end the session (everywhere: it is kept in the ledger)
    GET  /dashboard/api/summary      ?days=N  spend, distribution, rates, savings (JSON)
    GET  /dashboard/api/decisions    ?q=&page=  recent routing decisions (JSON)
    GET  /dashboard/static/...       script, styles and the vendored Chart.js (no data)

The page builds every element from the API's JSON with ``textContent`` (never HTML), and
every HTML answer carries a strict Content-Security-Policy: scripts and styles from the
gateway itself only, no inline script, nothing from another origin.
"""

from __future__ import annotations

import asyncio
import html
import logging
from datetime import UTC, datetime
from functools import cache
from importlib.resources import files
from typing import Any
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from tierwise.errors import AuthThrottledError, LedgerError
from tierwise.gateway.auth import Authenticator, presented_key
from tierwise.gateway.dashboard import queries
from tierwise.gateway.dashboard.session import (
    COOKIE,
    COOKIE_PATH,
    SESSION_MAX_AGE_S,
    DashboardAuth,
    SessionStore,
    new_session_id,
)
from tierwise.gateway.service import Gateway

log = logging.getLogger("tierwise.gateway")
PACKAGE = "tierwise.gateway.dashboard"
LOGIN_FORM_LIMIT = 4096
DEFAULT_DAYS = 7
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
_HTML_HEADERS = {
    "content-security-policy": _CSP,
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}
_API_HEADERS = {"cache-control": "no-store", "x-content-type-options": "nosniff"}
_LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>tierwise · sign in</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/dashboard/static/dashboard.css"></head>
<body class="login"><main class="login-box">
<h1>tierwise dashboard</h1>
<form method="post" action="/dashboard/login">
<label for="key">Admin key</label>
<input id="key" name="key" type="password" autocomplete="current-password" required autofocus>
<button type="submit">Sign in</button>
</form>
<p class="message" role="alert">{message}</p>
</main></body></html>
"""
_LEDGER_DOWN = "The gateway's ledger is unavailable: try again shortly."
_NO_ADMIN_KEY = (
    "The dashboard is off: no admin key is configured (set TIERWISE_ADMIN_KEY or admin_key)."
)


@cache
def _page() -> str:
    """The dashboard page (read from the package once, at first use)."""
    return (files(PACKAGE) / "static" / "index.html").read_text(encoding="utf-8")


def _login_page(message: str = "", status: int = 200) -> HTMLResponse:
    body = _LOGIN_PAGE.format(message=html.escape(message))
    return HTMLResponse(body, status_code=status, headers=_HTML_HEADERS)


def _throttled(wait_s: int) -> HTMLResponse:
    """429: too many failed sign-ins from this address; try again after ``wait_s``."""
    unit = "second" if wait_s == 1 else "seconds"
    message = f"Too many failed sign-ins from your address: try again in {wait_s} {unit}."
    response = _login_page(message, status=429)
    response.headers["retry-after"] = str(wait_s)
    return response


def _down(exc: LedgerError) -> str:
    """What a client is told when the ledger fails: the detail goes to the server log only."""
    log.warning("dashboard: %s", exc)
    return _LEDGER_DOWN


def _api_error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message}}, status_code=status, headers=_API_HEADERS)


def _api_throttled(exc: AuthThrottledError) -> JSONResponse:
    response = _api_error(429, exc.message)
    response.headers["retry-after"] = str(exc.retry_after_s)
    return response


def _unauthorized() -> JSONResponse:
    response = _api_error(401, "the dashboard needs the admin key (sign in at /dashboard)")
    response.headers["www-authenticate"] = 'Bearer realm="tierwise dashboard"'
    return response


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    """Query parameter ``name`` as an int clamped to ``[low, high]``; ValueError if not one."""
    raw = request.query_params.get(name, "").strip()
    if not raw:
        return default
    if not (raw.isascii() and raw.isdigit()):
        raise ValueError(f"`{name}` must be a whole number, not {raw[:40]!r}")
    return min(max(int(raw), low), high)


class Dashboard:
    """The dashboard's handlers, bound to one gateway."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        admin = gateway.settings.admin_key
        self.auth = DashboardAuth(admin.get_secret_value() if admin else None)

    @property
    def keys(self) -> Authenticator:
        """The gateway's key checks: failures here count with the model endpoints' (one
        throttle per address)."""
        return self.gateway.running.auth

    @property
    def sessions(self) -> SessionStore:
        return SessionStore(self.gateway.running.ledger)

    def routes(self) -> list[BaseRoute]:
        static = StaticFiles(packages=[(PACKAGE, "static")])
        return [
            Route("/dashboard", self.page, methods=["GET"]),
            Route("/dashboard/login", self.login_form, methods=["GET"]),
            Route("/dashboard/login", self.login, methods=["POST"]),
            Route("/dashboard/logout", self.logout, methods=["POST"]),
            Route("/dashboard/api/summary", self.summary, methods=["GET"]),
            Route("/dashboard/api/decisions", self.decisions, methods=["GET"]),
            Mount("/dashboard/static", app=static, name="dashboard-static"),
        ]

    async def _allowed(self, request: Request) -> bool:
        """The request carries the admin key or an open session's cookie. A presented key
        that is not the admin key counts as a failure (AuthThrottledError past the limit,
        even for the right key); a cookie is no guess (forging its HMAC is out of reach).
        LedgerError if the sessions cannot be read."""
        if (key := presented_key(request.headers)) is not None:
            client = self.gateway.client_address(request.scope)
            self.keys.check_throttle(client)
            if self.auth.is_admin_key(key):
                self.keys.admin_signed_in(client)
                return True
            await self.keys.failed_check(client)
        session = self.auth.session_id(request.cookies.get(COOKIE))
        return session is not None and await asyncio.to_thread(self.sessions.active, session)

    async def page(self, request: Request) -> Response:
        try:
            allowed = await self._allowed(request)
        except AuthThrottledError as exc:
            return _throttled(exc.retry_after_s)
        except LedgerError as exc:
            return _login_page(_down(exc), status=503)
        if not allowed:
            return RedirectResponse("/dashboard/login", status_code=303)
        return HTMLResponse(_page(), headers=_HTML_HEADERS)

    async def login_form(self, request: Request) -> Response:
        if not self.auth.enabled:
            return _login_page(_NO_ADMIN_KEY, status=503)
        try:
            allowed = await self._allowed(request)
        except AuthThrottledError as exc:
            return _throttled(exc.retry_after_s)
        except LedgerError as exc:
            return _login_page(_down(exc), status=503)
        if allowed:
            return RedirectResponse("/dashboard", status_code=303)
        return _login_page()

    async def login(self, request: Request) -> Response:
        """Check the posted key; on success set the session cookie and go to the page."""
        if not self.auth.enabled:
            return _login_page(_NO_ADMIN_KEY, status=503)
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > LOGIN_FORM_LIMIT:
                return _login_page("That form is too large.", status=413)
        # from here to the verdict nothing awaits: concurrent guesses cannot pass the count
        client = self.gateway.client_address(request.scope)
        try:
            self.keys.check_throttle(client)
        except AuthThrottledError as exc:
            return _throttled(exc.retry_after_s)
        form = parse_qs(body.decode("utf-8", "replace"), max_num_fields=4)
        key = (form.get("key") or [""])[0].strip()
        if not self.auth.is_admin_key(key):
            await self.keys.failed_check(client)
            return _login_page("That is not the admin key.", status=401)
        self.keys.admin_signed_in(client)
        session = new_session_id()
        try:
            await asyncio.to_thread(self.sessions.open, session)
        except LedgerError as exc:
            return _login_page(_down(exc), status=503)
        response = RedirectResponse("/dashboard", status_code=303)
        response.set_cookie(
            COOKIE,
            self.auth.issue(session),
            max_age=SESSION_MAX_AGE_S,
            path=COOKIE_PATH,
            secure=self._secure(request),
            httponly=True,
            samesite="strict",
        )
        return response

    async def logout(self, request: Request) -> Response:
        """End the session server-side (its cookie is then refused everywhere) and drop it."""
        if (session := self.auth.session_id(request.cookies.get(COOKIE))) is not None:
            try:
                await asyncio.to_thread(self.sessions.close, session)
            except LedgerError as exc:
                return _login_page(_down(exc), status=503)
        response = RedirectResponse("/dashboard/login", status_code=303)
        response.delete_cookie(
            COOKIE,
            path=COOKIE_PATH,
            secure=self._secure(request),
            httponly=True,
            samesite="strict",
        )
        return response

    def _secure(self, request: Request) -> bool:
        """The cookie's ``Secure`` flag, by ``[gateway] cookie_secure``."""
        setting = self.gateway.config.cookie_secure
        if setting != "auto":
            return setting
        peer = request.client.host if request.client else None
        return self.gateway.proxies.https(request.url.scheme, peer, request.headers)

    async def _api_refusal(self, request: Request) -> Response | None:
        """The JSON API's answer to a request without the admin key or a session, else None."""
        try:
            if await self._allowed(request):
                return None
        except AuthThrottledError as exc:
            return _api_throttled(exc)
        except LedgerError as exc:
            return _api_error(503, _down(exc))
        return _unauthorized()

    async def summary(self, request: Request) -> Response:
        if (refused := await self._api_refusal(request)) is not None:
            return refused
        try:
            days = _int_param(request, "days", DEFAULT_DAYS, 1, queries.MAX_DAYS)
        except ValueError as exc:
            return _api_error(400, str(exc))
        running = self.gateway.running
        now = datetime.now(UTC)
        try:
            found = await asyncio.to_thread(
                queries.summary, running.ledger, running.engine.catalog, days, now
            )
        except LedgerError as exc:
            return _api_error(503, _down(exc))
        return _json(found.model_dump(mode="json"))

    async def decisions(self, request: Request) -> Response:
        if (refused := await self._api_refusal(request)) is not None:
            return refused
        try:
            page = _int_param(request, "page", 1, 1, 1_000_000)
        except ValueError as exc:
            return _api_error(400, str(exc))
        q = request.query_params.get("q", "")
        ledger = self.gateway.running.ledger
        try:
            found = await asyncio.to_thread(queries.decision_page, ledger, q, page)
        except LedgerError as exc:
            return _api_error(503, _down(exc))
        return _json(found.model_dump(mode="json"))


def _json(body: dict[str, Any]) -> JSONResponse:
    return JSONResponse(body, headers=_API_HEADERS)


def dashboard_routes(gateway: Gateway) -> list[BaseRoute]:
    """The dashboard's routes for ``gateway``'s app."""
    return Dashboard(gateway).routes()
