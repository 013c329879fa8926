"""The relay's configuration: `relay.json`, one entry per Segment-style source.

```json
{"sources": [{"writeKey": "…", "account": "83702741", "apiToken": "${DRIP_API_TOKEN}",
              "campaignId": "1234567", "keyStyle": "segment"}],
 "maxPending": 1000000}
```

A source's settings are checked by the same rules as the loader's (account, campaignId, apiToken,
keyStyle), with `apiToken` required here. `${NAME}` in a string is replaced by the environment variable
NAME, so the file can be committed without its secrets; a missing variable is an error that names it.
Every problem is one line that names the file and the place in it; secrets are never shown.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..loader.settings import Settings, SettingsError
from ..messages import show

DRIP_HOURLY_SINGLE = 3600  # Drip's requests per hour per account to its single-record endpoints
DRIP_HOURLY_BATCH = 50  # … and to its batch endpoints
DEFAULT_MAX_PENDING = 1_000_000

_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# Printable ASCII without spaces or colons: it travels as the user name of HTTP Basic auth, which ends at the
# first colon.
_WRITE_KEY = re.compile(r"[\x21-\x39\x3b-\x7e]{1,200}")
_SOURCE_KEYS = {"writeKey", "account", "apiToken", "token", "campaignId", "keyStyle", "rateLimits"}
_RATE_KEYS = {"single", "batch", "windowSeconds"}


class ConfigError(ValueError):
    """An invalid relay configuration; `problems` has one line each."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


@dataclasses.dataclass(frozen=True)
class RateLimits:
    """How many requests a source's Drip account may make per window (Drip's: an hour)."""

    single: int = DRIP_HOURLY_SINGLE
    batch: int = DRIP_HOURLY_BATCH
    window_seconds: float = 3600.0


@dataclasses.dataclass(frozen=True)
class Source:
    """One sender of Segment calls, and the Drip account its calls go to."""

    write_key: str = dataclasses.field(repr=False)
    account: str
    api_token: str = dataclasses.field(repr=False)
    campaign_id: str | None = None
    key_style: str = "segment"
    rate_limits: RateLimits = RateLimits()

    @property
    def name(self) -> str:
        """How status output, logs and metrics name the source: the account and the masked write key."""
        return f"{self.account} ({mask(self.write_key)})"


@dataclasses.dataclass(frozen=True)
class RelayConfig:
    sources: tuple[Source, ...]
    max_pending: int = DEFAULT_MAX_PENDING

    def source_for(self, write_key: str) -> Source | None:
        for source in self.sources:
            if source.write_key == write_key:
                return source
        return None


def mask(secret: str) -> str:
    """A secret as it may be shown: its last 4 characters at most."""
    return "…" + secret[-4:] if len(secret) > 8 else "…"


def load_config(path: str | os.PathLike[str], environ: Mapping[str, str] | None = None, *,
                tokens: bool = True) -> RelayConfig:
    """Read and check `relay.json`; ConfigError with every problem found. With tokens=False the API tokens
    are neither read nor checked (each source's is empty): `relay status` needs only the sources and their
    budgets, and must work in a shell that does not hold the tokens' environment variables."""
    where = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except OSError as error:
        raise ConfigError([f"{where}: cannot read it: {error.strerror}"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{where}: not UTF-8 text"]) from None
    try:
        data = json.loads(text)
    except RecursionError:
        raise ConfigError([f"{where}: nested too deeply to be a relay configuration"]) from None
    except ValueError as error:
        raise ConfigError([f"{where}: not valid JSON ({error})"]) from None
    return parse_config(data, where, os.environ if environ is None else environ, tokens=tokens)


def parse_config(data: Any, where: str, environ: Mapping[str, str], *, tokens: bool = True) -> RelayConfig:
    problems: list[str] = []
    if not isinstance(data, dict) or not isinstance(data.get("sources"), list) or not data["sources"]:
        raise ConfigError([f'{where}: expected an object with a non-empty "sources" list, like '
                           '{"sources": [{"writeKey": "…", "account": "83702741", "apiToken": "${DRIP_API_TOKEN}"}]}'])
    for key in data:
        if key not in ("sources", "maxPending"):
            problems.append(f"{where}: unknown key {show(key)}; the keys are sources, maxPending")
    max_pending = data.get("maxPending", DEFAULT_MAX_PENDING)
    if not (isinstance(max_pending, int) and not isinstance(max_pending, bool) and 1 <= max_pending <= 10**9):
        problems.append(f"{where}: maxPending: {show(max_pending)} is not a whole number from 1 to 1000000000")
    sources: list[Source] = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(data["sources"]):
        label = f"{where}: sources[{index}]"
        source = _source(entry, label, environ, problems, tokens)
        if source is None:
            continue
        if source.write_key in seen:
            problems.append(f"{label}.writeKey: the same write key as sources[{seen[source.write_key]}]; "
                            "each source needs its own")
            continue
        seen[source.write_key] = index
        sources.append(source)
    if problems:
        raise ConfigError(problems)
    return RelayConfig(tuple(sources), max_pending)


def _source(entry: Any, label: str, environ: Mapping[str, str], problems: list[str],
            tokens: bool = True) -> Source | None:
    if not isinstance(entry, dict):
        problems.append(f"{label}: expected an object with writeKey, account and apiToken")
        return None
    before = len(problems)
    for key in entry:
        if key not in _SOURCE_KEYS:
            problems.append(f"{label}: unknown key {show(key)}; the keys are {', '.join(sorted(_SOURCE_KEYS - {'token'}))}")
    values = {key: _expand(value, f"{label}.{key}", environ, problems) for key, value in entry.items()
              if tokens or key not in ("apiToken", "token")}
    token = values.get("apiToken", values.get("token"))
    write_key = values.get("writeKey")
    if not isinstance(write_key, str) or not _WRITE_KEY.fullmatch(write_key):
        found = "is required" if write_key is None else f"{show(write_key)} is not allowed"
        problems.append(f"{label}.writeKey: {found}: 1 to 200 printable ASCII characters without spaces or "
                        "colons (it is the user name of HTTP Basic auth)")
    token_named = any(line.startswith((f"{label}.apiToken", f"{label}.token")) for line in problems[before:])
    if tokens and token in (None, "") and not token_named:
        problems.append(f"{label}.apiToken: is required: the Drip API token of the account "
                        '(write "${DRIP_API_TOKEN}" to read it from the environment)')
    try:
        settings = Settings(account=values.get("account"), campaign_id=values.get("campaignId"),
                            api_token=token or None, key_style=values.get("keyStyle", "segment"))
    except SettingsError as error:
        problems.extend(f"{label}.{problem.line('json')}" for problem in error.problems)
        settings = None
    limits = _rate_limits(values.get("rateLimits"), f"{label}.rateLimits", problems)
    if len(problems) > before or settings is None:
        return None
    return Source(write_key=write_key, account=settings.account, api_token=settings.api_token or "",
                  campaign_id=settings.campaign_id, key_style=settings.key_style, rate_limits=limits)


def _rate_limits(value: Any, label: str, problems: list[str]) -> RateLimits:
    """Drip's hourly limits by default. Smaller budgets suit an account that other tools use too; short
    windows are for tests against the emulator, whose quotas are set to match."""
    if value is None:
        return RateLimits()
    if not isinstance(value, dict):
        problems.append(f"{label}: expected an object with single, batch and windowSeconds")
        return RateLimits()
    for key in value:
        if key not in _RATE_KEYS:
            problems.append(f"{label}: unknown key {show(key)}; the keys are {', '.join(sorted(_RATE_KEYS))}")
    limits = RateLimits()
    for key, name, ceiling in (("single", "single", DRIP_HOURLY_SINGLE), ("batch", "batch", DRIP_HOURLY_BATCH),
                               ("windowSeconds", "window_seconds", 3600)):
        if key not in value:
            continue
        number = value[key]
        whole = key != "windowSeconds"  # requests are counted; a window may be 2.5 s
        if (isinstance(number, bool) or not isinstance(number, int if whole else (int, float))
                or not 1 <= number <= ceiling):
            kind = "a whole number" if whole else "a number of seconds"
            problems.append(f"{label}.{key}: {show(number)} is not {kind} from 1 to {ceiling}")
            continue
        limits = dataclasses.replace(limits, **{name: number})
    return limits


def _expand(value: Any, label: str, environ: Mapping[str, str], problems: list[str]) -> Any:
    """Replace ${NAME} in strings (also inside objects) by the environment variable NAME."""
    if isinstance(value, dict):
        return {key: _expand(item, f"{label}.{key}", environ, problems) for key, item in value.items()}
    if not isinstance(value, str):
        return value

    def variable(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in environ:
            problems.append(f"{label}: the environment variable {name} is not set")
            return ""
        return environ[name]

    return _ENV_REFERENCE.sub(variable, value)
