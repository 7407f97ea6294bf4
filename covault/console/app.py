"""The console's web application (Starlette, server-rendered Jinja2 pages with autoescaping, no
scripts): :func:`create_app`. Pages: ``/jobs`` (the job files, their fingerprints and status),
``/jobs/NAME`` (the plan, Approve / Reject / Run), ``/runs`` and ``/runs/FINGERPRINT`` (what the
audit log records of each run), ``/audit`` (the entries and their verification), ``/identity``
(the certificate and its expiry). Access: :mod:`covault.console.auth`."""

from __future__ import annotations

import contextlib
import json
import re
import time
from pathlib import Path
from typing import Any

import jinja2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.body_limit import RequestBodyLimitMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from covault.console.auth import COOKIE, LOOPBACK, Gate
from covault.console.party import JobFile, PartyView
from covault.console.runner import RunError, Runner, run_output
from covault.errors import CovaultError

HERE = Path(__file__).parent
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
MAX_BODY = 1 << 20  # bytes of a request body (a form is a few hundred)
NOTICES = {"approved": "Approved: the signed approval is in this party's folder.", "rejected": "Rejected.",
           "started": "Started covault party for this party."}  # fmt: skip


def create_app(view: PartyView, gate: Gate, runner: Runner | None = None) -> Starlette:
    """The console of ``view.party``: pages for whoever logs in through ``gate``; ``runner``
    (default: a new one) starts its runs."""
    runner = runner or Runner(view.party, local=view.local, governance=view.governance)
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True, undefined=jinja2.StrictUndefined
    )
    env.filters["pretty"] = _pretty
    env.filters["thousands"] = _thousands
    templates = Jinja2Templates(env=env)
    pages = _Pages(view, gate, runner, templates)
    routes = [
        Route("/login", pages.login),
        Route("/", lambda r: RedirectResponse("/jobs", 303)),
        Route("/console.css", lambda r: FileResponse(HERE / "templates" / "console.css")),
        Route("/jobs", pages.jobs),
        Route("/jobs/{name}", pages.job),
        Route("/jobs/{name}/approve", pages.approve, methods=["POST"]),
        Route("/jobs/{name}/reject", pages.reject, methods=["POST"]),
        Route("/jobs/{name}/run", pages.run, methods=["POST"]),
        Route("/runs", pages.runs),
        Route("/runs/{fingerprint}", pages.run_page),
        Route("/audit", pages.audit),
        Route("/identity", pages.identity),
    ]
    app = Starlette(
        routes=routes,
        middleware=[  # the body limit inside the guard: its 413 gets the headers too
            Middleware(_Guard, gate=gate, templates=templates),
            Middleware(RequestBodyLimitMiddleware, max_body_size=MAX_BODY),
        ],
        exception_handlers={
            HTTPException: _error_page(templates),
            CovaultError: _error_page(templates),
            OSError: _error_page(templates),
            Exception: _error_page(templates),
        },
        lifespan=_lifespan(runner),
    )
    app.state.view, app.state.gate, app.state.runner = view, gate, runner
    return app


def _lifespan(runner: Runner):
    """Stop the runs still going when the server stops."""

    @contextlib.asynccontextmanager
    async def lifespan(app):
        try:
            yield
        finally:
            await run_in_threadpool(runner.stop)

    return lifespan


def _pretty(value: Any, indent: int | None = None) -> str:
    """JSON text of ``value`` for a page (plain text: the page escapes it)."""
    return json.dumps(value, indent=indent, sort_keys=True, ensure_ascii=False)


def _thousands(value: Any) -> str:
    """An integer with thousands separators; anything else as it is."""
    return f"{value:,}" if isinstance(value, int) else str(value)


_HOST = re.compile(
    r"\[(?P<v6>[0-9a-fA-F:.]+)\](?::[0-9]{1,5})?|(?P<name>[^:\[\]]+)(?::[0-9]{1,5})?|(?P<bare>[0-9a-fA-F:]+)"
)


def _host(header: str) -> str | None:
    """The host of a Host header, ``HOST``, ``HOST:PORT``, ``[V6]`` or ``[V6]:PORT``
    (``[::1]:8080`` -> ``::1``), a port being 1-5 digits; None for anything else
    (``localhost:x``, ``127.0.0.1:80@other``)."""
    m = _HOST.fullmatch(header)
    return None if m is None else m.group("v6") or m.group("name") or m.group("bare")


class _Guard:
    """The middleware (plain ASGI, so that a refused body reaches the error pages): loopback
    Host only (no DNS rebinding), no request a browser marks as coming from another site or
    another loopback port (``Sec-Fetch-Site``: same-site includes other ports, and the cookie
    goes with it), a session for every page but the login, the security headers on every
    response."""

    def __init__(self, app: ASGIApp, gate: Gate, templates: Jinja2Templates):
        self.app, self.gate, self.templates = app, gate, templates

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for k, v in HEADERS.items():
                    headers[k] = v
            await send(message)

        request = Request(scope)
        if _host(request.headers.get("host", "")) not in LOOPBACK:
            response: Response = Response("covault console: unknown host\n", 421, media_type="text/plain")
        elif request.headers.get("sec-fetch-site", "none") not in ("same-origin", "none"):
            response = Response(_OTHER_SITE, 403, media_type="text/plain")
        elif request.url.path != "/login" and self.gate.csrf(request.cookies.get(COOKIE)) is None:
            ctx = {"code": 401, "message": _NO_SESSION, "nav": None}
            response = self.templates.TemplateResponse(request, "error.html", ctx, status_code=401)
        else:
            await self.app(scope, receive, send_with_headers)
            return
        await response(scope, receive, send_with_headers)


_OTHER_SITE = (
    "covault console: refused a request from another site or another server on this host "
    "(open the console's pages directly)\n"
)
_INTERNAL = "Internal error: the console's terminal shows what went wrong."
_NO_SESSION = (
    "No session: open the URL that covault console printed at start (its token works once; "
    "restart the console for a new one)."
)


def _error_page(templates: Jinja2Templates):
    """The error page: an HTTP error with its status, a covault or file error (a missing key, an
    unreadable log) as 409 with its type and message, any other error as 500 saying only that
    (its traceback goes to the console's terminal, never to the page)."""

    async def handler(request: Request, exc: Exception) -> Response:
        if isinstance(exc, HTTPException):
            code, message = exc.status_code, exc.detail
        elif isinstance(exc, CovaultError | OSError):
            code, message = 409, f"{type(exc).__name__}: {exc}"
        else:
            code, message = 500, _INTERNAL
        ctx = {"code": code, "message": message, "nav": "error"}
        response = templates.TemplateResponse(request, "error.html", ctx, status_code=code)
        response.headers.update(HEADERS)  # a 500 is answered outside the guard
        return response

    return handler


class _Pages:
    """The endpoints (module docstring)."""

    def __init__(self, view: PartyView, gate: Gate, runner: Runner, templates: Jinja2Templates):
        self.view, self.gate, self.runner, self.templates = view, gate, runner, templates

    def _page(self, request: Request, name: str, nav: str, status: int = 200, **ctx: Any) -> Response:
        t0 = time.perf_counter()
        base = {"party": self.view.party, "csrf": self.gate.csrf(request.cookies.get(COOKIE)), "nav": nav}
        response = self.templates.TemplateResponse(request, name, {**base, **ctx}, status_code=status)
        response.headers["Server-Timing"] = f"render;dur={(time.perf_counter() - t0) * 1000:.1f}"
        return response

    async def _form(self, request: Request) -> dict[str, str]:
        """The posted form, refused (403) without this session's CSRF token."""
        form = await request.form()
        sent = form.get("csrf")
        if not self.gate.check_form(request.cookies.get(COOKIE), sent if isinstance(sent, str) else None):
            raise HTTPException(403, "This form carries no valid CSRF token: reload the page and try again.")
        return {k: v for k, v in form.items() if isinstance(v, str)}

    def login(self, request: Request) -> Response:
        if self.gate.csrf(request.cookies.get(COOKIE)) is not None:
            return RedirectResponse("/jobs", 303)  # the login URL opened again in a session
        sid = self.gate.login(request.query_params.get("token"))
        if sid is None:
            raise HTTPException(401, "Wrong or spent token: restart covault console for a new one.")
        response = RedirectResponse("/jobs", 303)
        response.set_cookie(COOKIE, sid, httponly=True, samesite="strict", path="/")
        return response

    def jobs(self, request: Request) -> Response:
        files = self.view.job_files()
        running = {f.fingerprint for f in files if f.fingerprint and self.runner.running(f.fingerprint)}
        return self._page(request, "jobs.html", "jobs", files=files, running=running, folder=self.view.jobs)

    def _job_file(self, name: str) -> JobFile:
        try:
            f = self.view.job_file(name)
        except LookupError as exc:
            raise HTTPException(404, str(exc)) from None
        if f.job is None:
            raise HTTPException(409, f"job file {name}: {f.error}")
        return f

    def job(self, request: Request, notice: str | None = None, error: str | None = None) -> Response:
        from covault.jobs.approvals import review
        from covault.jobs.plan import format_plan

        f = self._job_file(request.path_params["name"])
        r = review(f.job, self.view.party, f.folder)
        notice = notice or NOTICES.get(request.query_params.get("done", ""))
        return self._page(
            request,
            "job.html",
            "jobs",
            status=409 if error else 200,
            f=f,
            review=r,
            plan_text=format_plan(r.plan),
            running=self.runner.running(f.fingerprint),
            output=run_output(f.folder, f.fingerprint),
            notice=notice,
            error=error,
        )

    async def _decide(self, request: Request, what: str) -> Response:
        from covault.errors import CovaultError
        from covault.jobs.approvals import approve, reject

        form = await self._form(request)
        name = request.path_params["name"]
        f = await run_in_threadpool(self._job_file, name)
        if form.get("fingerprint") != f.fingerprint:
            error = "The job file changed since this page was shown: read its plan again before deciding."
            return await run_in_threadpool(self.job, request, None, error)
        try:
            if what == "approve":
                await run_in_threadpool(approve, f.job, self.view.party, f.folder)
            else:
                reason = form.get("reason", "").strip() or None
                await run_in_threadpool(reject, f.job, self.view.party, f.folder, reason)
        except CovaultError as exc:
            return await run_in_threadpool(self.job, request, None, f"{type(exc).__name__}: {exc}")
        return RedirectResponse(f"/jobs/{_quote(name)}?done={what}d", 303)

    async def approve(self, request: Request) -> Response:
        return await self._decide(request, "approve")

    async def reject(self, request: Request) -> Response:
        return await self._decide(request, "reject")

    async def run(self, request: Request) -> Response:
        form = await self._form(request)
        name = request.path_params["name"]
        f = await run_in_threadpool(self._job_file, name)
        if form.get("fingerprint") != f.fingerprint:
            return await run_in_threadpool(self.job, request, None, "The job file changed: read it again.")
        try:
            self.runner.start(f.path, f.folder, f.fingerprint)
        except (RunError, OSError) as exc:
            return await run_in_threadpool(self.job, request, None, str(exc))
        return RedirectResponse(f"/jobs/{_quote(name)}?done=started", 303)

    def runs(self, request: Request) -> Response:
        return self._page(request, "runs.html", "runs", runs=self.view.runs())

    def run_page(self, request: Request) -> Response:
        try:
            folder, status, entries = self.view.run(request.path_params["fingerprint"])
        except LookupError as exc:
            raise HTTPException(404, str(exc)) from None
        by_kind = {e.kind: e for e in entries}  # the latest entry of each kind
        return self._page(
            request,
            "run.html",
            "runs",
            status_=status,
            entries=entries,
            by_kind=by_kind,
            output=run_output(folder, status.fingerprint),
        )

    def audit(self, request: Request) -> Response:
        return self._page(request, "audit.html", "audit", logs=self.view.audit())

    def identity(self, request: Request) -> Response:
        return self._page(request, "identity.html", "identity", identities=self.view.identities())


def _quote(name: str) -> str:
    from urllib.parse import quote

    return quote(name, safe="")
