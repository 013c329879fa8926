"""Drip's REST API, as the relay's senders call it: one pooled HTTP client, every answer classified.

Drip authenticates with HTTP Basic, the API token as the user and an empty password. Every failure —
an HTTP error, a timeout, a refused or reset connection — comes back as a `DripAnswer`, never as an
exception: the delivery loop decides what each one means.
"""

from __future__ import annotations

import base64
import dataclasses
import email.utils
import json
import time
from typing import Any
from urllib.parse import urlsplit

import httpx

from ..messages import one_line
from ..version import __version__

CONCURRENCY_ERROR = "too many concurrent requests"  # Drip's answer while another request for the same person runs
_ERROR_LIMIT = 500


class DripApiUrlError(ValueError):
    """A --drip-api value the relay will not send tokens to."""


def check_api_url(url: str) -> str:
    """`https://…`, or `http://` to a loopback address only (the emulator): tokens never travel in clear."""
    try:
        parts = urlsplit(url)
    except ValueError:
        raise DripApiUrlError(f"{url!r} is not a URL") from None
    host = (parts.hostname or "").lower()
    loopback = host in ("localhost", "::1") or host.startswith("127.")
    if parts.scheme == "https" and host or parts.scheme == "http" and loopback:
        if parts.query or parts.fragment or parts.username or parts.password:
            raise DripApiUrlError(f"{url!r}: no query, fragment or credentials in the Drip API URL")
        return url.rstrip("/")
    if parts.scheme == "http":
        raise DripApiUrlError(f"{url!r}: http:// is only for a loopback address (the emulator); use https://")
    raise DripApiUrlError(f"{url!r} is not an https:// URL")


@dataclasses.dataclass(frozen=True)
class DripAnswer:
    """What one request to Drip came to."""

    status: int | None                 # None: no HTTP answer (timeout, refused, reset)
    error: str = ""                    # Drip's error text, or what went wrong on the way; one line
    retry_after: float | None = None   # seconds, from Retry-After
    remaining: int | None = None       # X-RateLimit-Remaining

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def concurrency_error(self) -> bool:
        return self.status is not None and CONCURRENCY_ERROR in self.error.lower()

    @property
    def label(self) -> str:
        """For metrics: the status code, or what happened instead."""
        if self.status is not None:
            return str(self.status)
        return self.error.split(":", 1)[0] or "error"


class DripClient:
    """A pooled client for one Drip API base URL (connect and read timeouts; keep-alive)."""

    def __init__(self, base_url: str, *, connect_timeout: float = 5.0, read_timeout: float = 30.0,
                 transport: httpx.BaseTransport | None = None):
        self.base_url = check_api_url(base_url)
        self._http = httpx.Client(
            base_url=self.base_url,
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=16),
            headers={"User-Agent": f"driptag/{__version__}", "Content-Type": "application/json",
                     "Accept": "application/json"},
            follow_redirects=False,
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def post(self, token: str, path: str, body: dict[str, Any]) -> DripAnswer:
        """POST `body` to `path` (relative to the API base, e.g. `/v2/83702741/events`)."""
        credentials = base64.b64encode(f"{token}:".encode()).decode("ascii")
        content = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        try:
            response = self._http.post(self.base_url + path, content=content,
                                       headers={"Authorization": f"Basic {credentials}"})
        except httpx.TimeoutException as error:
            return DripAnswer(None, f"timeout: {type(error).__name__}")
        except httpx.TransportError as error:
            return DripAnswer(None, f"connection: {type(error).__name__}: {_one_line(str(error))}")
        return DripAnswer(
            response.status_code,
            "" if response.is_success else _error_text(response),
            _retry_after(response.headers.get("Retry-After")),
            _integer(response.headers.get("X-RateLimit-Remaining")),
        )


def _error_text(response: httpx.Response) -> str:
    """Drip's `{"errors": [{"code", "attribute"?, "message"}]}` as one line; other bodies shortened."""
    try:
        data = response.json()
        errors = data.get("errors") if isinstance(data, dict) else None
        if isinstance(errors, list) and errors:
            parts = []
            for item in errors:
                if isinstance(item, dict):
                    code, attribute, message = (item.get(k) for k in ("code", "attribute", "message"))
                    parts.append(" ".join(str(p) for p in (code, f"({attribute})" if attribute else None,
                                                            message) if p))
            if parts:
                return _one_line(f"{response.status_code}: " + "; ".join(parts))
    except (ValueError, UnicodeDecodeError):
        pass
    return _one_line(f"{response.status_code}: {response.text or response.reason_phrase}")


def _one_line(text: str) -> str:
    """Drip's text (an HTML error page, say) folded onto one short line."""
    return one_line(" ".join(text.split()), _ERROR_LIMIT)


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds or as an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _integer(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
