"""The middleware every request of `labels serve` passes: who may in, whether a
change is allowed and really came from one of our forms, and the headers that
keep a browser from running or loading anything the site did not ship.

- Token: where the site asks for one (any address but loopback, or a token in
  the config), `?token=T` once sets a cookie and redirects to the same page
  without it; scripts may send `Authorization: Bearer T` instead. Anything else
  is 401.
- Host: without a token, only loopback host names are answered, so that a web
  page whose name is made to resolve to 127.0.0.1 (DNS rebinding) cannot read
  the library through the visitor's browser.
- Changes: every request but GET and HEAD must carry the form token (`csrf`,
  the same value as the browser's `labels_csrf` cookie) and, when the browser
  says where it came from (Origin), come from this site. `--read-only` refuses
  them all (403). The checked form is handed to the view as
  `request.state.form`, parsed here once.
- Headers: a Content-Security-Policy that lets a page load only the site's own
  script, style and images (no inline script at all), no framing, no sniffing.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from http.cookies import SimpleCookie
from urllib.parse import parse_qsl, urlencode, urlsplit

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response

log = logging.getLogger(__name__)

TOKEN_COOKIE = "labels_token"
CSRF_COOKIE = "labels_csrf"
CSRF_FIELD = "csrf"
MAX_FORM_BYTES = 64 * 1024
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]", "::1")

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
}


def _cookies(scope) -> dict[str, str]:
    jar = SimpleCookie()
    for name, value in scope.get("headers", ()):
        if name == b"cookie":
            try:
                jar.load(value.decode("latin-1"))
            except Exception:  # noqa: BLE001 - a malformed cookie header counts as none
                return {}
    return {key: morsel.value for key, morsel in jar.items()}


def _same(given: str | None, wanted: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), wanted.encode())


def _host_name(host: str) -> str:
    """The name of a Host header without its port ("[::1]:8470" -> "[::1]")."""
    if host.startswith("["):
        return host[: host.find("]") + 1]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


class Guard:
    """ASGI middleware: token, host check, form check, security headers."""

    def __init__(self, app, site):
        self.app = app
        self.site = site

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        cookies = _cookies(scope)
        refused = self._refusal(request, cookies)
        if refused is not None:
            await self._send_with_headers(refused, scope, receive, send, set_csrf=None)
            return
        csrf = cookies.get(CSRF_COOKIE, "")
        new_csrf = None
        if len(csrf) != 43:  # not one of ours (secrets.token_urlsafe(32))
            csrf = new_csrf = secrets.token_urlsafe(32)
        state = scope.setdefault("state", {})
        state["csrf"] = csrf
        if request.method not in ("GET", "HEAD"):
            body = await _read_body(receive)
            problem = self._form_problem(request, body, csrf if new_csrf is None else None)
            if problem is not None:
                await self._send_with_headers(problem, scope, receive, send, set_csrf=new_csrf)
                return
            state["form"] = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
            receive = _replay(body, receive)
        await self._send_with_headers(self.app, scope, receive, send, set_csrf=new_csrf)

    def _refusal(self, request: Request, cookies: dict[str, str]) -> Response | None:
        site = self.site
        if site.token is None:
            host = request.headers.get("host", "")
            if site.check_host and _host_name(host) not in LOOPBACK_NAMES:
                return PlainTextResponse(
                    "labels serve answers only to loopback names (127.0.0.1, localhost) "
                    "without a token\n", status_code=421)
            return None
        given = request.query_params.get("token")
        if given is not None:
            if not _same(given, site.token):
                return _denied("that token is not this server's")
            rest = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "token"])
            # one leading slash: "//host/..." would send the browser to another site
            target = "/" + request.url.path.lstrip("/") + (f"?{rest}" if rest else "")
            response = RedirectResponse(target, status_code=303)
            response.set_cookie(TOKEN_COOKIE, site.token, httponly=True, samesite="lax",
                                secure=request.url.scheme == "https", max_age=400 * 86400)
            return response
        bearer = request.headers.get("authorization", "")
        if _same(cookies.get(TOKEN_COOKIE), site.token) or (
                bearer.startswith("Bearer ") and _same(bearer[7:].strip(), site.token)):
            return None
        return _denied("open the address `labels serve` printed, with its ?token=")

    def _form_problem(self, request: Request, body: bytes | None, csrf: str | None) -> Response | None:
        if self.site.read_only:
            return PlainTextResponse("this labels server is read-only (--read-only)\n",
                                     status_code=403)
        if body is None:
            return PlainTextResponse("form too large\n", status_code=413)
        origin = request.headers.get("origin")
        if origin is not None and origin != "null":
            own = request.headers.get("x-forwarded-host") or request.headers.get("host", "")
            if urlsplit(origin).netloc != own:
                return PlainTextResponse("this form was sent from another site\n", status_code=403)
        fields = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        if csrf is None or not _same(fields.get(CSRF_FIELD), csrf):
            return PlainTextResponse("this form has expired: reload the page and send it again\n",
                                     status_code=403)
        return None

    async def _send_with_headers(self, app, scope, receive, send, *, set_csrf: str | None):
        started = False

        async def send_wrapper(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
                headers.setdefault("cache-control", "no-cache")
                if set_csrf is not None:
                    headers.append("set-cookie", f"{CSRF_COOKIE}={set_csrf}; Path=/; HttpOnly; "
                                                 "SameSite=Strict")
            await send(message)

        try:
            await app(scope, receive, send_wrapper)
        except Exception:
            # Inside the headers, not in Starlette's outer error page: a failure is
            # logged with its traceback and answered as one line, with every header.
            log.exception("labels serve: %s %s failed", scope.get("method"), scope.get("path"))
            if started:
                raise
            await PlainTextResponse("labels serve: internal error (the log has the details)\n",
                                    status_code=500)(scope, receive, send_wrapper)


def _denied(why: str) -> Response:
    return PlainTextResponse(f"this labels server needs its token: {why}\n", status_code=401,
                             headers={"www-authenticate": "Bearer"})


async def _read_body(receive) -> bytes | None:
    """The request body, or None past MAX_FORM_BYTES."""
    parts, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(parts)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_FORM_BYTES:
            return None
        parts.append(chunk)
        if not message.get("more_body", False):
            return b"".join(parts)


def _replay(body: bytes, receive):
    """A `receive` that hands the view the body already read, then waits as the server's does."""
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


__all__ = ["CSP", "CSRF_COOKIE", "CSRF_FIELD", "Guard", "TOKEN_COOKIE"]
