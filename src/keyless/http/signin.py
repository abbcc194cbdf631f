"""The sign-in page at Google's authorization endpoint (``/o/oauth2/auth``, ``/o/oauth2/v2/auth``): plain
server-rendered HTML for ``gcloud auth login`` and ``gcloud auth application-default login``.

GET shows the page for a valid authorization request; its form POSTs back to the same URL with the request's
parameters, an anti-forgery token and the cookie that token is bound to. A signed-in user's code goes to the
client's loopback redirect URI (303), or is shown to copy when the client asked for its out-of-band page
(``--no-launch-browser``). ``keyless.service.signin`` holds the rules; every answer here is ``no-store`` and
may not be framed.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from urllib.parse import parse_qsl, urlsplit

from starlette.requests import Request
from starlette.responses import Response

from keyless.errors import OAuthError, SignInError
from keyless.http.common import keyless_of, read_body, via_google_host
from keyless.service import audit
from keyless.service.signin import COOKIE, FORGED, FORM_LIFETIME, AuthorizationRequest, Target, single

PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # No script at all; the page's own styles only; never framed. (No form-action: Chromium applies it to the
    # redirect that follows the form, and that goes to the client's loopback port.)
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; "
                               "base-uri 'none'",
    # The form's POST keeps its Origin header (which "no-referrer" would make "null"); the redirect carrying the
    # code to the client sends no Referer.
    "Referrer-Policy": "same-origin",
}
COOKIE_PATH = "/o/oauth2/"
STYLE = ("body{font-family:system-ui,sans-serif;color:#202124;background:#f8f9fa;margin:0}"
         "main{max-width:30rem;margin:3rem auto;background:#fff;border:1px solid #dadce0;border-radius:8px;"
         "padding:2rem}h1{font-size:1.5rem;font-weight:400;margin-top:0}.error{color:#b3261e}"
         "ul.accounts{list-style:none;padding:0}ul.accounts button{width:100%;text-align:left;padding:.75rem;"
         "margin:.25rem 0;background:#fff;border:1px solid #dadce0;border-radius:4px;cursor:pointer;font:inherit}"
         "label{display:block;margin:.75rem 0}input{display:block;width:100%;box-sizing:border-box;"
         "padding:.5rem;font:inherit}.actions{display:flex;gap:1rem;justify-content:flex-end;margin-top:1rem}"
         "code{display:block;word-break:break-all;padding:1rem;background:#f1f3f4;border-radius:4px;"
         "user-select:all}small{color:#5f6368}")


def _page(title: str, body: str, status: int = 200) -> Response:
    html = (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(title)} - keyless</title><style>{STYLE}</style></head>"
            f"<body><main>{body}</main></body></html>")
    return Response(html, status_code=status, media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)


def error_page(exc: SignInError) -> Response:
    """Google's "Access blocked" page: the error is the user's to read, nothing is redirected."""
    audit.note_error(f"{exc.error}: {exc.message}")
    return _page("Sign-in error", f"<h1>Access blocked: this request cannot be completed</h1>"
                 f'<p class="error" id="error">Error {exc.http_status}: {escape(exc.error)}</p>'
                 f'<p id="message">{escape(exc.message)}</p>', exc.http_status)


def _redirect(location: str) -> Response:
    return Response(status_code=303, headers={**PAGE_HEADERS, "Location": location})


def _answer_error(where: Target, error: OAuthError) -> Response:
    """An error of a request whose client and redirect URI are known good: back to the client (RFC 6749
    §4.1.2.1), or on the page when the client reads its answer from its code page."""
    audit.note_error(f"{error.error}: {error.description}")
    if where.shows_code:
        return error_page(SignInError(error.error, error.description))
    return _redirect(where.redirect(error=error.error, error_description=error.description))


def _hidden(auth: AuthorizationRequest, token: str) -> str:
    fields = {**auth.form_fields(), "csrf_token": token}
    return "".join(f'<input type="hidden" name="{escape(k)}" value="{escape(v)}">' for k, v in fields.items())


def _scopes(auth: AuthorizationRequest) -> str:
    items = "".join(f"<li>{escape(s)}</li>" for s in auth.scopes)
    return (f"<details><summary>{escape(auth.target.client.name)} asks for access to</summary>"
            f'<ul id="scopes">{items}</ul></details>')


async def _sign_in_page(request: Request, auth: AuthorizationRequest, nonce: str, *, message: str = "",
                        status: int = 200) -> Response:
    kl = keyless_of(request)
    token = kl.sign_in.form_token(nonce, auth)
    shown = f'<p class="error" id="error" role="alert">{escape(message)}</p>' if message else ""
    action = escape(request.url.path)
    cancel = '<button type="submit" name="action" value="cancel" id="cancel" formnovalidate>Cancel</button>'
    heading = (f"<h1>Sign in</h1><p>to continue to <strong>{escape(auth.target.client.name)}</strong>, "
               f"with your keyless account</p>{shown}")
    if kl.sign_in.user_picker:
        users = await kl.sign_in.pickable_users()
        buttons = "".join(f'<li><button type="submit" name="email" value="{escape(u.email)}" '
                          f'id="account-{escape(u.email)}">{escape(u.email)}</button></li>' for u in users)
        form = (f'<form method="post" action="{action}">{_hidden(auth, token)}'
                f"<p>Choose an account</p><ul class=\"accounts\">{buttons}</ul>{_scopes(auth)}"
                f'<div class="actions">{cancel}</div></form>'
                "<p><small>keyless lists its users because its API listens on loopback only.</small></p>")
    else:
        form = (f'<form method="post" action="{action}">{_hidden(auth, token)}'
                f'<label>Email <input type="email" name="email" id="email" autocomplete="username" required '
                f'value="{escape(auth.login_hint)}"></label>'
                '<label>Password <input type="password" name="password" id="password" '
                'autocomplete="current-password" required></label>'
                f'{_scopes(auth)}<div class="actions">{cancel}'
                '<button type="submit" name="action" value="sign_in" id="sign-in">Sign in</button></div></form>')
    response = _page("Sign in", heading + form, status)
    response.set_cookie(COOKIE, nonce, max_age=int(FORM_LIFETIME), path=COOKIE_PATH, httponly=True,
                        samesite="strict", secure=request.url.scheme == "https" or via_google_host(request))
    return response


def _code_page(auth: AuthorizationRequest, code: str) -> Response:
    client = escape(auth.target.client.name)
    return _page("Sign-in complete", f"<h1>Sign-in complete</h1><p>Copy this code, switch to {client} and "
                 f'paste it there:</p><code id="code">{escape(code)}</code>'
                 "<p><small>The code works once, within five minutes. Do not share it.</small></p>")


def _same_origin(request: Request) -> bool:
    """Whether the browser says the form came from this page's origin (headers a page cannot forge; a client
    that sends neither is judged by the anti-forgery token alone)."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin is None:
        return True
    host = request.headers.get("host", "").lower()
    try:
        netloc = urlsplit(origin).netloc.lower()
    except ValueError:
        return False
    if netloc.endswith(":443") and origin.lower().startswith("https://"):
        netloc = netloc[:-4]
    return origin != "null" and bool(netloc) and netloc in (host, host.removesuffix(":443"))


async def _form_pairs(request: Request) -> Sequence[tuple[str, str]]:
    if not request.headers.get("content-type", "").lower().startswith("application/x-www-form-urlencoded"):
        raise SignInError("invalid_request", "The sign-in form must be sent as application/x-www-form-urlencoded.")
    try:
        text = (await read_body(request)).decode()
        return parse_qsl(text, keep_blank_values=True, max_num_fields=100)
    except (UnicodeDecodeError, ValueError):
        raise SignInError("invalid_request", "The sign-in form is malformed.") from None


async def authorize(request: Request) -> Response:
    """``GET``: the sign-in page for an authorization request."""
    kl = keyless_of(request)
    try:
        where, parsed = kl.sign_in.parse(request.query_params.multi_items())
    except SignInError as exc:
        return error_page(exc)
    if isinstance(parsed, OAuthError):
        return _answer_error(where, parsed)
    return await _sign_in_page(request, parsed, kl.sign_in.new_form_nonce())


async def sign_in(request: Request) -> Response:
    """``POST``: the page's form; a code for the user who signs in."""
    kl = keyless_of(request)
    audit.begin("oauth2.SignIn", "accounts.google.com")
    try:
        pairs = await _form_pairs(request)
        if not _same_origin(request):
            raise SignInError("invalid_request", FORGED, http_status=403)
        where, parsed = kl.sign_in.parse(pairs)
    except SignInError as exc:
        return error_page(exc)
    audit.note_request(client_id=where.client.client_id, redirect_uri=where.redirect_uri)
    if isinstance(parsed, OAuthError):
        return _answer_error(where, parsed)
    audit.note_request(scope=" ".join(parsed.scopes))
    nonce = request.cookies.get(COOKIE)
    try:
        kl.sign_in.check_form_token(single(pairs, "csrf_token"), nonce, parsed)
        if single(pairs, "action") == "cancel":
            return _answer_error(where, OAuthError("access_denied", "The user denied access."))
        client = request.client.host if request.client else ""
        user = await kl.sign_in.sign_in(single(pairs, "email"), single(pairs, "password"), client)
    except SignInError as exc:
        if exc.http_status in (401, 429) and nonce:
            audit.note_error(f"{exc.error}: {exc.message}")
            return await _sign_in_page(request, parsed, nonce, message=exc.message, status=exc.http_status)
        return error_page(exc)
    except OAuthError as exc:  # a parameter sent twice
        return error_page(SignInError(exc.error, exc.description))
    code = await kl.sign_in.issue_code(parsed, user)
    if where.shows_code:
        return _code_page(parsed, code)
    return _redirect(where.redirect(code=code, scope=" ".join(parsed.scopes)))
