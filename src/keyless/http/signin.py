"""The sign-in page at Google's authorization endpoint (``/o/oauth2/auth``, ``/o/oauth2/v2/auth``): plain
server-rendered HTML for ``gcloud auth login`` and ``gcloud auth application-default login``.

GET shows the page for a valid authorization request; its form POSTs back to the same URL with the request's
parameters, an anti-forgery token and the cookie that token is bound to. A signed-in user's code goes to the
client's loopback redirect URI (303), or is shown to copy when the client asked for its out-of-band page
(``--no-launch-browser``). ``keyless.service.signin`` holds the rules; every answer here is ``no-store`` and
may not be framed.
"""

from __future__ import annotations

from collections.abc import Iterable
from html import escape
from urllib.parse import parse_qsl, urlencode, urlsplit

from starlette.requests import Request
from starlette.responses import Response

from keyless.errors import SignInError
from keyless.http.common import keyless_of, read_body, via_google_host
from keyless.service import audit
from keyless.service.signin import FORM_LIFETIME
from keyless.service.signin_requests import (
    MAX_PARAMETER_LENGTH,
    AuthorizationQuery,
    AuthorizationRequest,
    IssuedCode,
    Refusal,
    SignInForm,
    SignInPage,
    Target,
)

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
COOKIE = "keyless_signin"  # the anti-forgery token's nonce, for the browser that loaded the page
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


def _redirect_to(where: Target, **params: str) -> Response:
    """A 303 to the request's redirect URI with ``params`` (and the request's state) added to its query."""
    query = dict(params)
    if where.state:
        query["state"] = where.state
    joiner = "&" if "?" in where.redirect_uri else "?"
    location = where.redirect_uri + joiner + urlencode(query)
    return Response(status_code=303, headers={**PAGE_HEADERS, "Location": location})


def _answer_error(refusal: Refusal) -> Response:
    """An error of a request whose client and redirect URI are known good: back to the client (RFC 6749
    §4.1.2.1), or on the page when the client reads its answer from its code page."""
    error = refusal.error
    audit.note_error(f"{error.error}: {error.description}")
    if refusal.target.shows_code:
        return error_page(SignInError(error.error, error.description))
    return _redirect_to(refusal.target, error=error.error, error_description=error.description)


def _hidden(page: SignInPage) -> str:
    fields = {**page.authorization.form_fields(), "csrf_token": page.form_token}
    return "".join(f'<input type="hidden" name="{escape(k)}" value="{escape(v)}">' for k, v in fields.items())


def _scopes(auth: AuthorizationRequest) -> str:
    items = "".join(f"<li>{escape(s)}</li>" for s in auth.scopes)
    return (f"<details><summary>{escape(auth.target.client.name)} asks for access to</summary>"
            f'<ul id="scopes">{items}</ul></details>')


def _sign_in_page(request: Request, page: SignInPage) -> Response:
    auth = page.authorization
    status = 200
    shown = ""
    if page.error is not None:
        audit.note_error(f"{page.error.error}: {page.error.message}")
        status = page.error.http_status
        shown = f'<p class="error" id="error" role="alert">{escape(page.error.message)}</p>'
    action = escape(request.url.path)
    cancel = '<button type="submit" name="action" value="cancel" id="cancel" formnovalidate>Cancel</button>'
    heading = (f"<h1>Sign in</h1><p>to continue to <strong>{escape(auth.target.client.name)}</strong>, "
               f"with your keyless account</p>{shown}")
    if page.accounts is not None:
        buttons = "".join(f'<li><button type="submit" name="email" value="{escape(u.email)}" '
                          f'id="account-{escape(u.email)}">{escape(u.email)}</button></li>' for u in page.accounts)
        form = (f'<form method="post" action="{action}">{_hidden(page)}'
                f"<p>Choose an account</p><ul class=\"accounts\">{buttons}</ul>{_scopes(auth)}"
                f'<div class="actions">{cancel}</div></form>'
                "<p><small>keyless lists its users because its API listens on loopback only.</small></p>")
    else:
        form = (f'<form method="post" action="{action}">{_hidden(page)}'
                f'<label>Email <input type="email" name="email" id="email" autocomplete="username" required '
                f'value="{escape(auth.login_hint)}"></label>'
                '<label>Password <input type="password" name="password" id="password" '
                'autocomplete="current-password" required></label>'
                f'{_scopes(auth)}<div class="actions">{cancel}'
                '<button type="submit" name="action" value="sign_in" id="sign-in">Sign in</button></div></form>')
    response = _page("Sign in", heading + form, status)
    response.set_cookie(COOKIE, page.nonce, max_age=int(FORM_LIFETIME), path=COOKIE_PATH, httponly=True,
                        samesite="strict", secure=request.url.scheme == "https" or via_google_host(request))
    return response


def _code_page(issued: IssuedCode) -> Response:
    client = escape(issued.authorization.target.client.name)
    return _page("Sign-in complete", f"<h1>Sign-in complete</h1><p>Copy this code, switch to {client} and "
                 f'paste it there:</p><code id="code">{escape(issued.code)}</code>'
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


class _Parameters:
    """A query's or a form's parameters: each one's single value, and those that are not one value (RFC 6749
    §3.1: a parameter sent twice is an error) of at most MAX_PARAMETER_LENGTH characters, with why."""

    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        sent: dict[str, list[str]] = {}
        for name, value in pairs:
            sent.setdefault(name, []).append(value)
        self.values: dict[str, str] = {}
        self.malformed: dict[str, str] = {}
        for name, values in sent.items():
            if len(values) > 1:
                self.malformed[name] = f"Parameter {name} was sent more than once."
            elif len(values[0]) > MAX_PARAMETER_LENGTH:
                self.malformed[name] = f"Parameter {name} is longer than {MAX_PARAMETER_LENGTH} characters."
            else:
                self.values[name] = values[0]

    def authorization(self) -> AuthorizationQuery:
        get = self.values.get
        return AuthorizationQuery(
            client_id=get("client_id"), redirect_uri=get("redirect_uri"), state=get("state"),
            response_type=get("response_type"), scope=get("scope"), code_challenge=get("code_challenge"),
            code_challenge_method=get("code_challenge_method"), access_type=get("access_type"),
            prompt=get("prompt"), nonce=get("nonce"), login_hint=get("login_hint"), malformed=self.malformed)


async def _form(request: Request) -> SignInForm:
    """The POSTed form (``application/x-www-form-urlencoded``, nothing else) with what the request says of its
    browser: whether it came from this page's origin, the page's cookie, the client's address."""
    if not request.headers.get("content-type", "").lower().startswith("application/x-www-form-urlencoded"):
        raise SignInError("invalid_request", "The sign-in form must be sent as application/x-www-form-urlencoded.")
    try:
        text = (await read_body(request)).decode()
        params = _Parameters(parse_qsl(text, keep_blank_values=True, max_num_fields=100))
    except (UnicodeDecodeError, ValueError):
        raise SignInError("invalid_request", "The sign-in form is malformed.") from None
    get = params.values.get
    return SignInForm(params.authorization(), _same_origin(request), request.cookies.get(COOKIE),
                      request.client.host if request.client else "", csrf_token=get("csrf_token"),
                      action=get("action"), email=get("email"), password=get("password"), malformed=params.malformed)


def _render(request: Request, answer: SignInPage | Refusal | IssuedCode) -> Response:
    if isinstance(answer, SignInPage):
        return _sign_in_page(request, answer)
    if isinstance(answer, Refusal):
        return _answer_error(answer)
    if answer.authorization.target.shows_code:
        return _code_page(answer)
    return _redirect_to(answer.authorization.target, code=answer.code, scope=" ".join(answer.authorization.scopes))


async def authorize(request: Request) -> Response:
    """``GET``: the sign-in page for an authorization request."""
    query = _Parameters(request.query_params.multi_items()).authorization()
    try:
        return _render(request, await keyless_of(request).sign_in.page(query))
    except SignInError as exc:
        return error_page(exc)


async def sign_in(request: Request) -> Response:
    """``POST``: the page's form; a code for the user who signs in."""
    audit.begin("oauth2.SignIn", "accounts.google.com")
    try:
        answer = await keyless_of(request).sign_in.submit(await _form(request))
    except SignInError as exc:
        return error_page(exc)
    return _render(request, answer)
