"""The ``Pizzagpt`` provider: the gpt4free interface over the service's one JSON endpoint.

Compared with the gpt4free original it validates the model, recognises the service's real misuse
wording, turns every malformed answer into a typed error, reuses one keep-alive session per event
loop, and has timeouts and bounded retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import logging
import math
import os
import random
import re
import time
from typing import Any, ClassVar

from ..errors import (
    ConnectError,
    ConnectionLostError,
    EmptyAnswerError,
    HTTPStatusError,
    MisuseError,
    NonJSONResponseError,
    PromptError,
    RedirectError,
    RequestTimeoutError,
    ResponseShapeError,
    TransportError,
)
from .base import (
    AsyncGeneratorProvider,
    AsyncResult,
    FinishReason,
    Messages,
    ProviderModelMixin,
    format_prompt,
)

__all__ = ["Pizzagpt", "env_proxy", "parse_answer", "parse_retry_after", "redact"]

logger = logging.getLogger(__name__)

#: Statuses worth another try: rate limiting and the gateway's transient failures.
RETRY_STATUSES = frozenset({429, 502, 503, 504})
MISUSE_MARKER = "misuse detected"
EXCERPT_CHARS = 200

_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")


def redact(text: str, *secrets: str | None) -> str:
    """``text`` with URL credentials (``scheme://user:pass@``) and the given secrets masked."""
    text = _USERINFO.sub("***@", text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def _proxy_secrets(proxy: str | None) -> tuple[str | None, ...]:
    if not proxy:
        return ()
    from yarl import URL

    url = URL(proxy)
    return (url.raw_user, url.raw_password, url.user, url.password)


def _proxy_variable(name: str) -> tuple[str, str] | None:
    """``(value, variable)`` of the set proxy variable ``name`` (either case), or None."""
    # urllib's precedence: the lower-case variable wins; HTTP_PROXY is ignored under CGI.
    variable = name
    value = os.environ.get(name)
    if value is None and not (name == "http_proxy" and "REQUEST_METHOD" in os.environ):
        variable = name.upper()
        value = os.environ.get(variable)
    return (value, variable) if value else None


def env_proxy(url: str) -> str | None:
    """The proxy the standard variables (``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY``,
    ``NO_PROXY``, either case) choose for ``url``, or None."""
    chosen = env_proxy_source(url)
    return chosen[0] if chosen else None


def check_proxy(proxy: str, source: str) -> str:
    """``proxy`` if it is an http:// or https:// URL; else a ``ConfigurationError`` naming
    ``source`` (the variable or setting it came from) and what is wrong."""
    from ..errors import ConfigurationError

    scheme = proxy.split("://", 1)[0].lower() if "://" in proxy else ""
    if scheme in ("http", "https") and len(proxy) > len(scheme) + 3:
        return proxy
    shown = redact(proxy)
    if scheme:
        problem = f"a {scheme}:// proxy, which is not supported (only http:// and https://)"
    else:
        problem = "not a URL: it needs http:// or https:// in front"
    raise ConfigurationError(f"{source}={shown!r} is {problem}")


def env_proxy_source(url: str) -> tuple[str, str] | None:
    """``(proxy, variable)``: the proxy the standard variables choose for ``url`` and the
    variable that chose it, checked (a ``ConfigurationError`` names a malformed one); or None.

    Read on every request with a few direct look-ups: aiohttp's ``trust_env`` would scan the
    whole environment (and read ``.netrc``, which the service never needs) in a worker thread,
    twice a request.
    """
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    chosen = _proxy_variable(f"{parts.scheme}_proxy") or _proxy_variable("all_proxy")
    if chosen is None:
        return None
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


def parse_answer(
    body: bytes | str, content_type: str = "application/json", charset: str | None = None
) -> str:
    """The answer text in a response body, or the typed error that describes what is wrong.

    Accepts ``{"answer": {"content": ...}}`` and, as the original provider did, ``content`` at
    the top level when ``answer`` is missing.
    """
    text = _decode(body, charset) if isinstance(body, bytes) else body
    try:
        data = json.loads(text)
    except ValueError:
        raise NonJSONResponseError(content_type, text[:EXCERPT_CHARS]) from None
    if not isinstance(data, dict):
        raise ResponseShapeError(f"expected a JSON object, got {type(data).__name__}", data)
    answer = data.get("answer", data)
    if not isinstance(answer, dict):
        raise ResponseShapeError(
            f"'answer' is {type(answer).__name__}, expected an object with 'content'", data
        )
    content = answer.get("content")
    if content is None:
        raise EmptyAnswerError("The service sent an answer without content")
    if not isinstance(content, str):
        raise ResponseShapeError(f"'content' is {type(content).__name__}, expected text", data)
    if not content.strip():
        raise EmptyAnswerError("The service sent an empty answer")
    if MISUSE_MARKER in content.lower():
        raise MisuseError(" ".join(content.split()))
    return content


def _decode(body: bytes, charset: str | None) -> str:
    """The body as text in its declared charset; UTF-8 when none is declared (or it is one
    Python does not know)."""
    if charset:
        try:
            return body.decode(charset, "replace")
        except LookupError:
            logger.debug("unknown charset %r; reading UTF-8", charset)
    return body.decode("utf-8", "replace")


class Pizzagpt(AsyncGeneratorProvider, ProviderModelMixin):
    """Provider for the Pizzagpt service (``gpt-4o-mini``)."""

    url: ClassVar[str] = "https://www.pizzagpt.it"
    api_endpoint: ClassVar[str] = "/api/chatx-completion"
    working: ClassVar[bool] = True
    default_model: ClassVar[str] = "gpt-4o-mini"
    models: ClassVar[list[str]] = [default_model]
    model_aliases: ClassVar[dict[str, str]] = {}

    #: Seconds for the whole request, and for making the connection.
    timeout: ClassVar[float] = 60.0
    connect_timeout: ClassVar[float] = 10.0
    #: Further tries after the first, with exponential backoff and jitter.
    max_retries: ClassVar[int] = 3
    backoff_base: ClassVar[float] = 0.5
    backoff_max: ClassVar[float] = 30.0
    #: A ``Retry-After`` longer than this is not waited for: the error is raised at once.
    max_retry_after: ClassVar[float] = 60.0

    user_agent: ClassVar[str] = (
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/127.0.0.0 Safari/537.36"
    )

    @classmethod
    def base_url(cls, override: str | None = None) -> str:
        """The service's base URL: ``override``, else ``$PIZZAGPT_URL``, else ``url``.

        A value that is not an http(s) URL is a ``ConfigurationError`` naming where it came
        from."""
        from ..errors import ConfigurationError

        source = "base_url" if override else "PIZZAGPT_URL"
        value = (override or os.environ.get("PIZZAGPT_URL") or cls.url).strip().rstrip("/")
        scheme = value.split("://", 1)[0].lower() if "://" in value else ""
        if scheme not in ("http", "https") or len(value) <= len(scheme) + 3:
            hint = " (http:// is missing)" if not scheme else ""
            raise ConfigurationError(
                f"{source}={redact(value)!r} is not an http:// or https:// URL{hint}"
            )
        return value

    @classmethod
    def get_headers(cls, base_url: str) -> dict[str, str]:
        return {
            "accept": "application/json",
            "accept-language": "en-US,en;q=0.9",
            "content-type": "application/json",
            "origin": base_url,
            "referer": f"{base_url}/en",
            "user-agent": cls.user_agent,
            "x-secret": "Marinara",
        }

    @classmethod
    async def create_async_generator(
        cls,
        model: str,
        messages: Messages,
        proxy: str | None = None,
        *,
        timeout: float | None = None,
        connect_timeout: float | None = None,
        max_retries: int | None = None,
        base_url: str | None = None,
        **kwargs: Any,
    ) -> AsyncResult:
        """Yield the answer text, then ``FinishReason("stop")``.

        ``timeout`` and ``connect_timeout`` are in seconds; ``max_retries`` bounds the retries on
        429, 502, 503, 504 and connection failures; ``base_url`` overrides ``$PIZZAGPT_URL`` and
        the class's ``url``. Other keyword arguments are accepted and ignored, as in gpt4free.
        """
        cls.get_model(model)
        prompt = format_prompt(messages)
        if not prompt.strip():
            raise PromptError("The prompt is empty")
        content = await cls.request(
            prompt,
            proxy=proxy,
            timeout=cls.timeout if timeout is None else timeout,
            connect_timeout=cls.connect_timeout if connect_timeout is None else connect_timeout,
            max_retries=cls.max_retries if max_retries is None else max_retries,
            base_url=cls.base_url(base_url),
        )
        yield content
        yield FinishReason("stop")

    @classmethod
    def backoff_delay(cls, attempt: int, retry_after: float | None = None) -> float:
        """Seconds before retry number ``attempt + 1``: full-jitter exponential backoff, and at
        least ``Retry-After`` when the service sent one."""
        ceiling = min(cls.backoff_max, cls.backoff_base * (2**attempt))
        delay = random.uniform(ceiling / 2, ceiling)
        if retry_after is not None:
            delay = max(delay, retry_after)
        return delay

    @classmethod
    async def request(
        cls,
        prompt: str,
        *,
        proxy: str | None,
        timeout: float,
        connect_timeout: float,
        max_retries: int,
        base_url: str,
    ) -> str:
        """POST ``prompt`` and return the answer's text, retrying what is worth retrying.

        A request whose connection is closed before any of the answer came back (a keep-alive
        connection the server closed idle as it was reused, most often) is sent again at once
        on a fresh connection, once: no backoff, no retry spent. A 307 or 308 redirect repeats
        the POST at the new address; a 301, 302 or 303 (which would turn it into a GET) is a
        ``RedirectError`` naming the target. An infinite timeout means no time limit.
        """
        import aiohttp
        from yarl import URL

        from ..session import get_session, pause_requests, wait_until_allowed

        url = f"{base_url}{cls.api_endpoint}"
        proxy_source = "the proxy setting"
        if proxy:
            proxy = check_proxy(proxy, "proxy")
        else:
            chosen = env_proxy_source(url)
            if chosen is not None:
                proxy, proxy_source = chosen[0], chosen[1]
        secrets = _proxy_secrets(proxy)
        client_timeout = aiohttp.ClientTimeout(
            total=None if math.isinf(timeout) else timeout,
            sock_connect=None if math.isinf(connect_timeout) else connect_timeout,
        )
        attempt = 0
        stale_resent = False
        redirects = 0
        while True:
            shown_url = redact(url)
            headers = cls.get_headers(base_url)
            session = await get_session()
            await wait_until_allowed()
            retry_after: float | None = None
            rate_limited = False
            try:
                logger.debug("POST %s (attempt %d)", shown_url, attempt + 1)
                async with session.post(
                    url,
                    json={"question": prompt},
                    headers=headers,
                    proxy=proxy,
                    timeout=client_timeout,
                    allow_redirects=False,
                ) as response:
                    if response.status in (301, 302, 303, 307, 308):
                        location = response.headers.get("Location", "")
                        target = str(response.url.join(URL(location))) if location else ""
                        if response.status in (307, 308) and target and redirects < 5:
                            redirects += 1
                            logger.info(
                                "%s redirected (%d) to %s",
                                shown_url,
                                response.status,
                                redact(target),
                            )
                            url = target
                            continue
                        raise RedirectError(response.status, shown_url, redact(target))
                    if response.status >= 400:
                        length = response.content_length
                        if length is not None and length <= 65536:
                            # A small error body read to its end leaves the connection
                            # reusable, so a retry needs no new handshake.
                            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                                await response.read()
                        retry_after = parse_retry_after(response.headers.get("Retry-After"))
                        error: Exception = HTTPStatusError(
                            response.status, response.reason or "", shown_url, retry_after
                        )
                        retryable = response.status in RETRY_STATUSES
                        rate_limited = response.status == 429
                    else:
                        try:
                            body = await response.read()
                        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError) as exc:
                            raise ConnectionLostError(
                                redact(
                                    f"The connection to {shown_url} was lost while the "
                                    f"answer was arriving ({exc})",
                                    *secrets,
                                )
                            ) from None
                        return parse_answer(body, response.content_type, response.charset)
            except asyncio.CancelledError:
                raise
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
                if not stale_resent and not isinstance(exc, aiohttp.ClientConnectorError):
                    # The connection was closed before any of the answer came back: most
                    # often a keep-alive connection the server closed idle just as it was
                    # reused. The request goes again at once, on a new connection, once.
                    stale_resent = True
                    logger.debug("a reused connection was closed (%s); sending again", exc)
                    continue
                error = cls._connect_error(exc, shown_url, proxy, proxy_source, secrets)
                retryable = True
            except aiohttp.ServerTimeoutError as exc:
                error = cls._connect_error(exc, shown_url, proxy, proxy_source, secrets)
                retryable = True
            except asyncio.TimeoutError:
                raise RequestTimeoutError(
                    f"No answer from {shown_url} within {timeout:g} s"
                ) from None
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
                    redact(f"Request to {shown_url} failed: {_describe(exc)}", *secrets)
                ) from None
            stale_resent = False
            too_long = retry_after is not None and retry_after > cls.max_retry_after
            if not retryable or attempt >= max_retries or too_long:
                raise error
            delay = cls.backoff_delay(attempt, retry_after)
            if rate_limited:
                pause_requests(delay)
            logger.info("%s; retrying in %.2f s", error, delay)
            attempt += 1
            await asyncio.sleep(delay)

    @staticmethod
    def _connect_error(
        exc: BaseException,
        shown_url: str,
        proxy: str | None,
        proxy_source: str,
        secrets: tuple[str | None, ...],
    ) -> ConnectError:
        import aiohttp

        if proxy and isinstance(exc, aiohttp.ClientProxyConnectionError):
            text = (
                f"Cannot reach the proxy {proxy} (from {proxy_source}) for {shown_url}: "
                f"{_describe(exc)}"
            )
        else:
            via = f" through the proxy {proxy} (from {proxy_source})" if proxy else ""
            text = f"Cannot reach {shown_url}{via}: {_describe(exc)}"
        return ConnectError(redact(text, *secrets))


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())
