"""Drives the local oidc-provider's login pages over HTTP, as a person's
browser would: one cookie jar, each redirect followed by hand, forms read
from the HTML and posted back.

Used by the `browser` and `device-login` scripts beside this file. Only
loopback URLs are requested, and proxy settings from the environment are
ignored so that nothing leaves the machine.
"""

import html.parser
import http.cookiejar
import os
import sys
import urllib.error
import urllib.parse
import urllib.request

# Upper bound on the redirects and pages of one flow, so a loop in the
# provider's pages ends the script instead of hanging it.
MAX_STEPS = 20

# Seconds to wait for one HTTP response.
REQUEST_TIMEOUT = 30

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "[::1]", "::1"}


class FlowError(Exception):
    """A step of the login did not go as the provider's pages should."""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


class _FormParser(html.parser.HTMLParser):
    """Collects each form's action, method and the named inputs inside it.

    Buttons are left out, because a browser sends a button's value only when
    that button is the one clicked (the device confirmation page has an
    `abort` button next to its continue button).
    """

    def __init__(self):
        super().__init__()
        self.forms = []
        self._current = None

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "form":
            self._current = {
                "action": attributes.get("action", ""),
                "method": attributes.get("method", "get").lower(),
                "inputs": {},
            }
            self.forms.append(self._current)
        elif tag == "input" and self._current is not None and attributes.get("name"):
            self._current["inputs"][attributes["name"]] = attributes.get("value") or ""

    def handle_endtag(self, tag):
        if tag == "form":
            self._current = None


class Response:
    def __init__(self, url, status, headers, body):
        self.url = url
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def location(self):
        value = self.headers.get("Location")
        return urllib.parse.urljoin(self.url, value) if value else None

    def forms(self):
        parser = _FormParser()
        parser.feed(self.body)
        return parser.forms


class Browser:
    """An HTTP client with one cookie jar that never follows redirects."""

    def __init__(self):
        self.opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}),
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()),
            _NoRedirect(),
        )

    def request(self, url, form=None):
        host = urllib.parse.urlsplit(url).hostname or ""
        if host not in LOOPBACK_HOSTS and f"[{host}]" not in LOOPBACK_HOSTS:
            raise FlowError(f"not requesting {url}: only loopback addresses are allowed")
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        request = urllib.request.Request(url, data=data)
        try:
            with self.opener.open(request, timeout=REQUEST_TIMEOUT) as reply:
                body = reply.read().decode("utf-8", "replace")
                return Response(url, reply.status, reply.headers, body)
        except urllib.error.HTTPError as error:
            body = error.read().decode("utf-8", "replace")
            return Response(url, error.code, error.headers, body)
        except urllib.error.URLError as error:
            raise FlowError(f"request to {url} failed: {error.reason}") from error


def form_with(response, field):
    """Returns the first form on the page that has an input named `field`."""
    for form in response.forms():
        if field in form["inputs"]:
            return form
    return None


def login_fields(response, login):
    """Returns the action URL and the fields that fill in a login or consent page,
    or None when the page has neither form."""
    form = form_with(response, "prompt")
    if form is None:
        return None
    action = urllib.parse.urljoin(response.url, form["action"])
    prompt = form["inputs"]["prompt"]
    if prompt == "login":
        return action, {"prompt": "login", "login": login, "password": "any-password"}
    if prompt == "consent":
        return action, {"prompt": "consent"}
    raise FlowError(f"{response.url} asks for an unknown prompt {prompt!r}")


def run_pages(browser, response, answer_page, stop):
    """Follows redirects and submits pages until a page or redirect ends the
    flow, and returns what ended it.

    `stop(url)` ends the flow at a redirect target (the URL is returned
    without being requested). `answer_page(response)` returns the
    `(url, form_fields)` to post next, or a `Done` holding the result.
    Raises FlowError on an error status or after MAX_STEPS pages.
    """
    for _ in range(MAX_STEPS):
        if response.status in (301, 302, 303, 307, 308):
            target = response.location
            if target is None:
                raise FlowError(f"redirect from {response.url} has no Location header")
            if stop(target):
                return target
            response = browser.request(target)
            continue

        if response.status != 200:
            raise FlowError(
                f"{response.url} returned HTTP {response.status}: {response.body[:500]}"
            )

        step = answer_page(response)
        if isinstance(step, Done):
            return step.result
        url, fields = step
        response = browser.request(url, fields)

    raise FlowError(f"the login did not finish within {MAX_STEPS} pages")


class Done:
    """The result of a flow that ended on a page."""

    def __init__(self, result):
        self.result = result


def control(key):
    """Returns a setting from the file named by $TOLLGATE_TEST_BROWSER_CONTROL
    (lines of `key=value`), or None when the file or the key is absent.

    Tests change the browser's behaviour through this file while an agent,
    which passes its own environment to the browser, keeps running.
    """
    path = os.environ.get("TOLLGATE_TEST_BROWSER_CONTROL")
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as settings:
            for line in settings:
                name, _, value = line.strip().partition("=")
                if name == key:
                    return value
    except FileNotFoundError:
        return None
    return None


def login_name():
    """Returns the login name the scripts sign in with."""
    return control("login") or os.environ.get("TOLLGATE_TEST_LOGIN") or "alice"


def browser_mode():
    """Returns what the browser does with a URL: login, ignore or deny."""
    return control("mode") or os.environ.get("TOLLGATE_TEST_BROWSER_MODE") or "login"


def log_line(line):
    """Appends `line` to $TOLLGATE_TEST_BROWSER_LOG when it is set."""
    path = os.environ.get("TOLLGATE_TEST_BROWSER_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as log:
            log.write(line + "\n")


def die(program, message):
    print(f"{program}: {message}", file=sys.stderr)
    sys.exit(1)
