"""Sending a request to a service: proxies, redirects, retries, timeouts and typed errors.

Every provider that speaks HTTP (Pizzagpt, the OpenAI-compatible endpoints) sends through
``open_response``, so they share one behaviour:

- one keep-alive session per event loop (``session.get_session``);
- the proxy from the call, else the standard variables, checked and named in every error;
- 307 and 308 redirects repeat the POST at the new address (at most 5); 301, 302 and 303,
  which would turn it into a GET, are a ``RedirectError``; a key (``Authorization``,
  ``x-api-key``) never follows a redirect to another origin;
- 4xx and 5xx answers become the error the provider builds from them; the retryable ones, and
  connection failures, are retried with jittered exponential backoff, at least ``Retry-After``;
  a 429 pauses every request on the loop (``session.pause_requests``);
- a request whose reused connection was closed before any answer came back is sent again at
  once, once, without backoff;
- an infinite timeout means no limit. Secrets (proxy credentials, keys) are masked in every
  message.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import functools
import ipaddress
import logging
import math
import os
import random
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import session as _session
from .errors import (
    ConfigurationError,
    ConnectError,
    ConnectionLostError,
    HTTPStatusError,
    RedirectError,
    RequestTimeoutError,
    TransportError,
)

if TYPE_CHECKING:
    import aiohttp

__all__ = [
    "Policy",
    "check_proxy",
    "check_url",
    "env_proxy",
    "env_proxy_source",
    "open_response",
    "parse_retry_after",
    "read_body",
    "reading_body",
    "send",
    "redact",
    "IdleTimeout",
    "join_url",
    "mask_error",
]

logger = logging.getLogger(__name__)

# Credentials in a URL: ``scheme://user:pass@`` anywhere, and ``user:pass@host`` without a
# scheme (``HTTP_PROXY=carol:PW@proxy:3128``) where a URL begins: at the start of the text,
# after white space, a quote, a bracket or ``=``.
_USERINFO = re.compile(r"""(?:(?<=://)[^/\s'"]+|(?:^|(?<=[\s'"(<=]))[^/@\s'"(<=:]+:[^/\s'"]*)@""")
_BEARER = re.compile(r"(?i)\b(Bearer)\s+[A-Za-z0-9._~+/=-]{4,}")
#: Headers that carry a key, dropped on a redirect to another origin.
_KEY_HEADERS = frozenset({"authorization", "x-api-key"})
#: An error body read to its end (so the connection stays reusable) when it is at most this big.
SMALL_BODY = 65536


def redact(text: str, *secrets: str | None) -> str:
    """``text`` with URL credentials (``scheme://user:pass@``, or ``user:pass@host`` with no
    scheme), ``Authorization`` tokens (``Bearer ...``) and the given secrets masked."""
    if "@" in text:
        text = _USERINFO.sub("***@", text)
    if "earer" in text or "EARER" in text:
        text = _BEARER.sub(r"\1 ***", text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def mask_error(exc: BaseException, secrets: tuple[str | None, ...]) -> BaseException:
    """``exc`` with ``redact`` applied to its message and text attributes, in place: the last
    guard of a provider's error paths, whatever text of the server's a message quotes."""
    exc.args = tuple(redact(a, *secrets) if isinstance(a, str) else a for a in exc.args)
    for name in ("detail", "excerpt", "location", "url", "partial"):
        value = getattr(exc, name, None)
        if isinstance(value, str) and value:
            setattr(exc, name, redact(value, *secrets))
    return exc


def join_url(base: str, path: str) -> str:
    """``path`` appended to the path of ``base``, its query kept (Azure's
    ``http://host/v1?api-version=...`` gives ``http://host/v1/chat/completions?api-version=...``).
    """
    if "?" not in base and "#" not in base:
        return f"{base.rstrip('/')}/{path}"
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(base)
    return urlunsplit(parts._replace(path=f"{parts.path.rstrip('/')}/{path}", fragment=""))


@functools.lru_cache(maxsize=256)
def _shown(url: str, secrets: tuple[str | None, ...]) -> str:
    return redact(url, *secrets)


@functools.lru_cache(maxsize=256)
def check_url(value: str, source: str, schemes: tuple[str, ...] = ("http", "https")) -> str:
    """``value`` without trailing ``/`` if it is a URL with one of ``schemes``; else a
    ``ConfigurationError`` naming ``source`` (the variable or setting it came from)."""
    value = value.strip().rstrip("/")
    scheme = value.split("://", 1)[0].lower() if "://" in value else ""
    if scheme in schemes and len(value) > len(scheme) + 3:
        return value
    shown = redact(value)
    wanted = " or ".join(f"{s}://" for s in schemes)
    if scheme:
        problem = f"a {scheme}:// URL, which is not supported (only {wanted})"
    else:
        problem = f"not a URL: it needs {wanted} in front"
    raise ConfigurationError(f"{source}={shown!r} is {problem}")


def check_proxy(proxy: str, source: str) -> str:
    """``proxy`` if it is an http:// or https:// URL; else a ``ConfigurationError`` naming
    ``source`` (the variable or setting it came from) and what is wrong."""
    check_url(proxy, source)
    return proxy.strip()


def _proxy_secrets(proxy: str | None) -> tuple[str | None, ...]:
    if not proxy:
        return ()
    from yarl import URL

    url = URL(proxy)
    return (url.raw_user, url.raw_password, url.user, url.password)


_ENCODED: dict[str, Any] = {}


def _getenv(name: str) -> str | None:
    """``os.environ.get(name)``, without the cost of the KeyError it raises inside for an
    unset variable (read several times a request, and unset for most users)."""
    environ: Any = os.environ
    data = getattr(environ, "_data", None)
    if data is None:  # pragma: no cover - an os.environ without CPython's internals
        return os.environ.get(name)
    key = _ENCODED.get(name)
    if key is None:
        key = _ENCODED[name] = environ.encodekey(name)
    value = data.get(key)
    return None if value is None else environ.decodevalue(value)


_PROXY_VARIABLES = tuple(
    f"{scheme}_proxy".lower() if lower else f"{scheme}_proxy".upper()
    for scheme in ("http", "https", "all")
    for lower in (True, False)
)


def _proxy_variables_set() -> bool:
    """Whether any proxy variable is set (most often none is: one look at the environment)."""
    environ: Any = os.environ
    data = getattr(environ, "_data", None)
    if data is None:  # pragma: no cover - an os.environ without CPython's internals
        return any(name in os.environ for name in _PROXY_VARIABLES)
    global _PROXY_KEYS
    if _PROXY_KEYS is None:
        _PROXY_KEYS = tuple(environ.encodekey(name) for name in _PROXY_VARIABLES)
    return not data.keys().isdisjoint(_PROXY_KEYS)


_PROXY_KEYS: tuple[Any, ...] | None = None


def _proxy_variable(name: str) -> tuple[str, str] | None:
    """``(value, variable)`` of the set proxy variable ``name`` (either case), or None."""
    # urllib's precedence: the lower-case variable wins; HTTP_PROXY is ignored under CGI.
    variable = name
    value = _getenv(name)
    if value is None and not (name == "http_proxy" and _getenv("REQUEST_METHOD") is not None):
        variable = name.upper()
        value = _getenv(variable)
    return (value, variable) if value else None


def env_proxy(url: str) -> str | None:
    """The proxy the standard variables (``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY``,
    ``NO_PROXY``, either case) choose for ``url``, or None."""
    chosen = env_proxy_source(url)
    return chosen[0] if chosen else None


def env_proxy_source(url: str) -> tuple[str, str] | None:
    """``(proxy, variable)``: the proxy the standard variables choose for ``url`` and the
    variable that chose it, checked (a ``ConfigurationError`` names a malformed one); or None.

    Read on every request with a few direct look-ups: aiohttp's ``trust_env`` would scan the
    whole environment (and read ``.netrc``, which no service needs) in a worker thread, twice
    a request.
    """
    if not _proxy_variables_set():
        return None
    scheme = url.split(":", 1)[0].lower()
    chosen = _proxy_variable(f"{scheme}_proxy") or _proxy_variable("all_proxy")
    if chosen is None:
        return None
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    no_proxy = _proxy_variable("no_proxy")
    if no_proxy:
        from urllib.request import proxy_bypass_environment  # type: ignore[attr-defined]

        if proxy_bypass_environment(parts.hostname or "", {"no": no_proxy[0]}):
            return None
    return check_proxy(*chosen), chosen[1]


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


def describe(exc: BaseException) -> str:
    """An exception as one line of text."""
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def _is_local(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _origin(url: Any) -> tuple[str, str, int | None]:
    return (url.scheme, url.host or "", url.port)


@dataclass
class Policy:
    """How one provider's requests are retried, and how its failures are worded.

    ``status_error(status, reason, url, retry_after, body)`` builds the error for a 4xx or 5xx
    answer (``body`` is its text when small, else ``""``); ``label`` names the endpoint in a
    refused-connection message ("nothing is listening at ... (ollama)").
    """

    max_retries: int = 3
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    max_retry_after: float = 60.0
    retry_statuses: frozenset[int] = frozenset({429, 502, 503, 504})
    status_error: Callable[[int, str, str, float | None, str], Exception] | None = None
    label: str = ""
    secrets: tuple[str | None, ...] = field(default=(), repr=False)

    def backoff_delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds before retry number ``attempt + 1``: full-jitter exponential backoff, and
        at least ``Retry-After`` when the service sent one."""
        ceiling = min(self.backoff_max, self.backoff_base * (2**attempt))
        delay = random.uniform(ceiling / 2, ceiling)
        if retry_after is not None:
            delay = max(delay, retry_after)
        return delay


@functools.lru_cache(maxsize=64)
def client_timeout(timeout: float, connect_timeout: float, stream: bool = False) -> Any:
    """aiohttp's timeout: ``timeout`` for the whole request (for a stream, for each wait for
    data, so a long answer that keeps coming is never cut), ``connect_timeout`` for the
    connection; infinite values mean no limit."""
    import aiohttp

    limit = None if math.isinf(timeout) else timeout
    connect = None if math.isinf(connect_timeout) else connect_timeout
    if stream:
        return aiohttp.ClientTimeout(total=None, sock_connect=connect, sock_read=limit)
    return aiohttp.ClientTimeout(total=limit, sock_connect=connect)


def body_error(
    exc: BaseException, shown_url: str, timeout: float, secrets: tuple[str | None, ...] = ()
) -> Exception | None:
    """The typed error for a failure while an answer's body was arriving, or None."""
    import aiohttp

    if isinstance(exc, (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError)):
        return ConnectionLostError(
            redact(
                f"The connection to {shown_url} was lost while the answer was arriving "
                f"({describe(exc)})",
                *secrets,
            )
        )
    if isinstance(exc, (aiohttp.ServerTimeoutError, asyncio.TimeoutError)):
        return RequestTimeoutError(f"No answer from {shown_url} within {timeout:g} s")
    return None


async def read_body(
    response: aiohttp.ClientResponse,
    shown_url: str,
    timeout: float,
    secrets: tuple[str | None, ...] = (),
) -> bytes:
    """The whole body of ``response``; a lost connection or a timeout as a typed error."""
    try:
        return await response.read()
    except Exception as exc:
        error = body_error(exc, shown_url, timeout, secrets)
        if error is None:
            raise
        raise error from None


@contextlib.asynccontextmanager
async def reading_body(
    shown_url: str, timeout: float, secrets: tuple[str | None, ...] = ()
) -> AsyncIterator[None]:
    """Turn the failures of reading an answer's body into typed errors."""
    try:
        yield
    except Exception as exc:
        error = body_error(exc, shown_url, timeout, secrets)
        if error is None:
            raise
        raise error from None


class IdleTimeout:
    """``async with IdleTimeout(seconds):`` raises ``TimeoutError`` in place of the block once
    it has waited ``seconds`` since the last ``reset()``; an infinite ``seconds`` never fires.

    A stream's read timeout is restarted by any byte, so an endpoint that sends only
    keep-alive comments (``: ping``) would hold a call forever; this limit is restarted only
    by content. Only waiting counts: the block calls ``waiting()`` before it awaits the server
    and ``arrived()`` after, and the time in between (a reader of an async generator working
    on a chunk) moves the deadline on. Each of these is an attribute store and a clock read.
    """

    __slots__ = (
        "_handle",
        "_loop",
        "_paused_at",
        "_task",
        "_waiting",
        "deadline",
        "expired",
        "seconds",
    )

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.deadline = 0.0
        self.expired = False
        self._waiting = False
        self._paused_at = 0.0
        self._handle: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def reset(self) -> None:
        """Content arrived: the full time again from now."""
        if self._loop is not None:
            self.deadline = self._loop.time() + self.seconds

    def waiting(self) -> None:
        """The block awaits the server now."""
        if self._loop is not None and not self._waiting:
            self.deadline += self._loop.time() - self._paused_at
            self._waiting = True
            if self._handle is None:  # it went off while the reader worked: set it again
                self._handle = self._loop.call_at(self.deadline, self._check)

    def arrived(self) -> None:
        """The await is over (whatever came): time from here on is not the server's."""
        if self._loop is not None:
            self._paused_at = self._loop.time()
            self._waiting = False

    async def __aenter__(self) -> IdleTimeout:
        if math.isinf(self.seconds):
            return self
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        self.reset()
        self._paused_at = self._loop.time()
        self._handle = self._loop.call_at(self.deadline, self._check)
        return self

    def _check(self) -> None:
        assert self._loop is not None and self._task is not None
        now = self._loop.time()
        if not self._waiting:
            self._handle = None  # set again by waiting(), at the deadline moved on
            return
        if now < self.deadline:
            self._handle = self._loop.call_at(self.deadline, self._check)
            return
        self.expired = True
        self._handle = None
        self._task.cancel()

    async def __aexit__(self, kind: Any, exc: Any, tb: Any) -> bool:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self.expired and kind is asyncio.CancelledError:
            uncancel = getattr(self._task, "uncancel", None)
            if uncancel is not None:
                uncancel()
            raise TimeoutError
        return False


@contextlib.asynccontextmanager
async def open_response(
    method: str, url: str, *, policy: Policy, **options: Any
) -> AsyncIterator[aiohttp.ClientResponse]:
    """``send``'s response as a context: released at the end of the block."""
    response = await send(method, url, policy=policy, **options)
    try:
        yield response
    finally:
        response.release()


async def send(
    method: str,
    url: str,
    policy: Policy,
    json: Any = None,
    headers: dict[str, str] | None = None,
    proxy: str | None = None,
    timeout: float = 60.0,
    connect_timeout: float = 10.0,
    stream: bool = False,
    data: bytes | None = None,
) -> aiohttp.ClientResponse:
    """The service's successful (2xx) response to the request, open for reading its body; the
    caller releases it (``open_response`` does so at the end of a block).

    Everything before the body (redirects, error statuses, retries, connection failures) is
    handled here, as the module describes; the caller reads the body with ``read_body`` (or
    inside ``reading_body``). ``data`` is a body already encoded (an upload), sent instead of
    ``json`` with the caller's ``Content-Type``.
    """
    import aiohttp

    proxy_source = "the proxy setting"
    if proxy:
        proxy = check_proxy(proxy, "proxy")
    elif _proxy_variables_set():
        chosen = env_proxy_source(url)
        if chosen is not None:
            proxy, proxy_source = chosen
    secrets = (*_proxy_secrets(proxy), *policy.secrets) if proxy else policy.secrets
    limits = client_timeout(timeout, connect_timeout, stream)
    first_url = url
    attempt = 0
    stale_resent = False
    redirects = 0
    while True:
        shown_url = _shown(url, secrets)
        session = _session.ready_session()
        if session is None:
            session = await _session.get_session()
            await _session.wait_until_allowed()
        retry_after: float | None = None
        rate_limited = False
        response: aiohttp.ClientResponse | None = None
        try:
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug("%s %s (attempt %d)", method, shown_url, attempt + 1)
            response = await session.request(
                method,
                url,
                json=json,
                data=data,
                headers=headers,
                proxy=proxy,
                timeout=limits,
                allow_redirects=False,
            )
            status = response.status
            if status in (301, 302, 303, 307, 308):
                from yarl import URL

                location = response.headers.get("Location", "")
                target = str(response.url.join(URL(location))) if location else ""
                response.release()
                if status in (307, 308) and target and redirects < 5:
                    redirects += 1
                    logger.info("%s redirected (%d) to %s", shown_url, status, redact(target))
                    if headers and _origin(URL(target)) != _origin(URL(first_url)):
                        # A key is for its own endpoint only, never for where it sends us
                        # (the caller's headers are left as they are).
                        headers = {
                            k: v for k, v in headers.items() if k.lower() not in _KEY_HEADERS
                        }
                    url = target
                    continue
                raise RedirectError(status, shown_url, redact(target, *secrets))
            if status < 400:
                return response
            body = ""
            length = response.content_length
            if length is None or length <= SMALL_BODY:
                # A small error body read to its end leaves the connection reusable, so a
                # retry needs no new handshake; it also says what went wrong.
                with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                    raw = await response.content.read(SMALL_BODY)
                    body = raw.decode(response.charset or "utf-8", "replace")
            response.release()
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            reason = response.reason or ""
            if policy.status_error is not None:
                error: Exception = policy.status_error(
                    status, reason, shown_url, retry_after, redact(body, *secrets)
                )
            else:
                error = HTTPStatusError(status, reason, shown_url, retry_after)
            retryable = status in policy.retry_statuses
            rate_limited = status == 429
        except asyncio.CancelledError:
            if response is not None:
                response.close()
            raise
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
            if not stale_resent and not isinstance(exc, aiohttp.ClientConnectorError):
                # The connection was closed before any of the answer came back: most often a
                # keep-alive connection the server closed idle just as it was reused. The
                # request goes again at once, on a new connection, once.
                stale_resent = True
                logger.debug("a reused connection was closed (%s); sending again", exc)
                continue
            error, retryable = _connect_error(exc, url, shown_url, proxy, proxy_source, policy)
            error = type(error)(redact(str(error), *secrets))
        except aiohttp.ServerTimeoutError as exc:
            error, retryable = _connect_error(exc, url, shown_url, proxy, proxy_source, policy)
            error = type(error)(redact(str(error), *secrets))
        except asyncio.TimeoutError:
            raise RequestTimeoutError(f"No answer from {shown_url} within {timeout:g} s") from None
        except aiohttp.ClientHttpProxyError as exc:
            raise ConnectError(
                redact(
                    f"The proxy {proxy} (from {proxy_source}) refused the request: "
                    f"{exc.status} {exc.message}",
                    *secrets,
                )
            ) from None
        except aiohttp.InvalidURL as exc:
            raise ConnectError(redact(f"Invalid URL: {exc}", *secrets)) from None
        except aiohttp.ClientError as exc:
            raise TransportError(
                redact(f"Request to {shown_url} failed: {describe(exc)}", *secrets)
            ) from None
        stale_resent = False
        too_long = retry_after is not None and retry_after > policy.max_retry_after
        if not retryable or attempt >= policy.max_retries or too_long:
            raise error
        delay = policy.backoff_delay(attempt, retry_after)
        if rate_limited:
            _session.pause_requests(delay)
        logger.info("%s; retrying in %.2f s", error, delay)
        attempt += 1
        await asyncio.sleep(delay)


def _connect_error(
    exc: BaseException,
    url: str,
    shown_url: str,
    proxy: str | None,
    proxy_source: str,
    policy: Policy,
) -> tuple[ConnectError, bool]:
    """The error for a connection that could not be made, and whether to retry it."""
    import errno

    import aiohttp
    from yarl import URL

    if proxy and isinstance(exc, aiohttp.ClientProxyConnectionError):
        text = (
            f"Cannot reach the proxy {proxy} (from {proxy_source}) for {shown_url}: {describe(exc)}"
        )
        return ConnectError(text), True
    target = URL(url)
    refused = isinstance(exc, aiohttp.ClientConnectorError) and (
        exc.os_error.errno == errno.ECONNREFUSED
    )
    if refused and policy.label and not proxy and _is_local(target.host):
        # A local model server that is not running does not start in the seconds retries
        # take: say so at once.
        return ConnectError(
            f"Nothing is listening at {target.origin()} ({policy.label}): is the server running?"
        ), False
    via = f" through the proxy {proxy} (from {proxy_source})" if proxy else ""
    return ConnectError(f"Cannot reach {shown_url}{via}: {describe(exc)}"), True
