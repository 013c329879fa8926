"""Settings (SPEC §1): one validated, immutable object.

The names follow Segment's Drip destination, so an exported Segment settings object can be used as is.
Every problem names the setting, shows the offending value (truncated, control characters escaped) and
says what is allowed. Validation here is the first line of defence; the escaping of §2.4 is the second.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

DEFAULT_SCRIPT_ORIGIN = "https://tag.getdrip.com"

# JSON key -> Python name. `token` is the name Segment's own settings object uses for the API token.
JSON_KEYS = {
    "account": "account",
    "campaignId": "campaign_id",
    "apiToken": "api_token",
    "token": "api_token",
    "scriptOrigin": "script_origin",
    "globalName": "global_name",
    "keyStyle": "key_style",
    "consent": "consent",
    "callbackTimeout": "callback_timeout_ms",
    "debug": "debug",
    "preload": "preload",
}

# Python name -> (JSON key, CLI flag): how front ends name a setting in their messages.
LABELS = {
    "account": ("account", "--account"),
    "campaign_id": ("campaignId", "--campaign-id"),
    "api_token": ("apiToken", "--api-token"),
    "script_origin": ("scriptOrigin", "--script-origin"),
    "global_name": ("globalName", "--global"),
    "key_style": ("keyStyle", "--keys"),
    "consent": ("consent", "--consent"),
    "callback_timeout_ms": ("callbackTimeout", "--callback-timeout"),
    "debug": ("debug", "--debug"),
    "preload": ("preload", "--preload"),
}

# Keys that Segment puts into a destination's settings object and that mean nothing to driptag.
SEGMENT_ONLY_KEYS = frozenset({
    "versionSettings", "type", "bundlingStatus", "addBundledMetadata", "unbundledIntegrations",
    "bundledConfigIds", "maybeBundledConfigIds", "enabled", "name", "id",
})

# Names the page, the browser or Drip relies on; a facade there would break something.
FORBIDDEN_GLOBALS = frozenset({
    "window", "self", "top", "parent", "frames", "globalThis", "document", "location", "navigator",
    "history", "console", "localStorage", "sessionStorage", "screen", "performance", "event", "name",
    "status", "origin", "opener", "closed", "length", "external", "chrome", "Object", "Array", "Function",
    "String", "Number", "Boolean", "Symbol", "BigInt", "Math", "JSON", "Date", "RegExp", "Error", "Promise",
    "Proxy", "Reflect", "Map", "Set", "WeakMap", "WeakSet", "Intl", "NaN", "Infinity", "undefined", "eval",
    "isNaN", "isFinite", "parseInt", "parseFloat", "setTimeout", "clearTimeout", "setInterval",
    "clearInterval", "fetch", "XMLHttpRequest", "alert", "confirm", "prompt", "arguments",
    "driptag", "_dc", "_dcq", "_dcs", "Drip", "dripEmulator", "dripEmulatorDefaults", "dripEmulatorOptions",
})

RESERVED_WORDS = frozenset("""
    break case catch class const continue debugger default delete do else enum export extends false
    finally for function if implements import in instanceof interface let new null package private
    protected public return static super switch this throw true try typeof var void while with yield
    await async of
""".split())

_ACCOUNT = re.compile(r"[0-9]{7,9}")
_CAMPAIGN = re.compile(r"[0-9]{1,20}")
_TOKEN = re.compile(r"[A-Za-z0-9]{20,128}")
_IDENTIFIER = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]{0,63}")
_URL_PATH = re.compile(r"(/[A-Za-z0-9._~-]+)*/?")
_HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")
_LOCAL_HOSTS = ("localhost", "127.0.0.1")


def show(value: Any, limit: int = 40) -> str:
    """The offending value for a message: quoted, control characters escaped, truncated."""
    if value is None or isinstance(value, (bool, int, float)):
        return repr(value)
    text = value if isinstance(value, str) else repr(value)
    escaped = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text[:limit])
    shown = f"'{escaped}'" if isinstance(value, str) else escaped
    return shown if len(text) <= limit else f"{shown}… ({len(text):,} characters)"


def _key_label(key: Any) -> str:
    """An unknown key as the label of its problem: control characters escaped, truncated, one line."""
    text = str(key)
    escaped = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text[:40])
    return escaped if len(text) <= 40 else escaped + "…"


@dataclasses.dataclass(frozen=True)
class Problem:
    setting: str  # the Python name; front ends label it with LABELS
    message: str
    as_written: bool = False  # `setting` is a key as the file wrote it (an unknown key): never relabelled

    def line(self, style: str = "python") -> str:
        if self.as_written:
            return f"{self.setting}: {self.message}"
        json_key, flag = LABELS.get(self.setting, (self.setting, "--" + self.setting))
        label = {"python": self.setting, "json": json_key, "cli": f"{json_key} ({flag})"}[style]
        return f"{label}: {self.message}"


class SettingsError(ValueError):
    """Invalid settings. `problems` has one entry per problem, each naming its setting."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        super().__init__("; ".join(p.line() for p in self.problems))


def _numeric_id(value: Any, pattern: re.Pattern[str], what: str) -> str:
    """A Drip ID: a string of ASCII digits; a non-negative integer is accepted and turned into one."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        value = str(value)
    if isinstance(value, str) and pattern.fullmatch(value):
        return value
    raise ValueError(f"{show(value)} is not {what}")


def _account(value: Any) -> str:
    return _numeric_id(value, _ACCOUNT, "a Drip account ID: 7 to 9 digits, like 83702741")


def _campaign(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return _numeric_id(value, _CAMPAIGN, "a Drip campaign ID: 1 to 20 digits, like 1234567")


def _token(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, str) and _TOKEN.fullmatch(value):
        return value
    # A secret: never shown, whatever its type; only its length or type.
    shown = f"a value of {len(value):,} characters" if isinstance(value, str) else f"a {type(value).__name__} value"
    raise ValueError(f"{shown} is not a Drip API token: 20 to 128 letters and digits")


def _origin(value: Any) -> str:
    allowed = ("an https:// URL without query or fragment, like https://tag.getdrip.com "
               "(http:// only for localhost or 127.0.0.1)")
    # urlsplit silently drops leading white space: a value that has any is refused, not repaired.
    if (not isinstance(value, str) or len(value) > 2000 or not value.isascii() or not value.isprintable()
            or value != value.strip()):
        raise ValueError(f"{show(value)} is not allowed: {allowed}")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise ValueError(f"{show(value)} is not allowed: {allowed}") from None
    host = parts.hostname or ""
    if parts.scheme == "http" and host not in _LOCAL_HOSTS:
        raise ValueError(f"{show(value)} is not allowed: http:// is only for localhost and 127.0.0.1; use https://")
    if (parts.scheme not in ("https", "http") or parts.query or parts.fragment or "?" in value or "#" in value
            or parts.username is not None or parts.password is not None or not _HOST.fullmatch(host)
            or parts.netloc.lower() != (host + (f":{port}" if port is not None else ""))
            or not _URL_PATH.fullmatch(parts.path)):
        raise ValueError(f"{show(value)} is not allowed: {allowed}")
    return f"{parts.scheme}://{parts.netloc.lower()}{parts.path.rstrip('/')}"


def _global_name(value: Any) -> str:
    if not isinstance(value, str) or not _IDENTIFIER.fullmatch(value):
        raise ValueError(f"{show(value)} is not allowed: an ASCII JavaScript identifier of at most 64 characters")
    if value in RESERVED_WORDS:
        raise ValueError(f"{show(value)} is not allowed: it is a JavaScript reserved word; use another identifier, "
                         "like analytics")
    if value in FORBIDDEN_GLOBALS:
        raise ValueError(f"{show(value)} is not allowed: the page, the browser or Drip relies on that name; "
                         "use another identifier, like analytics")
    return value


def _choice(*allowed: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if isinstance(value, str) and value in allowed:
            return value
        raise ValueError(f"{show(value)} is not allowed: one of {', '.join(allowed)}")
    return check


def _timeout(value: Any) -> int:
    if isinstance(value, str) and re.fullmatch(r"[0-9]{1,5}", value):
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 10000:
        return value
    raise ValueError(f"{show(value)} is not allowed: a whole number of milliseconds from 0 to 10000")


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", ""):
        return value.lower() in ("true", "1")
    raise ValueError(f"{show(value)} is not allowed: true or false")


_CHECKS: dict[str, Callable[[Any], Any]] = {
    "account": _account,
    "campaign_id": _campaign,
    "api_token": _token,
    "script_origin": _origin,
    "global_name": _global_name,
    "key_style": _choice("segment", "snake"),
    "consent": _choice("auto", "required"),
    "callback_timeout_ms": _timeout,
    "debug": _flag,
    "preload": _flag,
}


@dataclasses.dataclass(frozen=True)
class Settings:
    """Validated settings of one loader. Raises SettingsError (a ValueError) listing every problem."""

    account: str
    campaign_id: str | None = None
    api_token: str | None = dataclasses.field(default=None, repr=False)
    script_origin: str = DEFAULT_SCRIPT_ORIGIN
    global_name: str = "analytics"
    key_style: str = "segment"
    consent: str = "auto"
    callback_timeout_ms: int = 300
    debug: bool = False
    preload: bool = True

    def __post_init__(self) -> None:
        problems = []
        for field in dataclasses.fields(self):
            try:
                object.__setattr__(self, field.name, _CHECKS[field.name](getattr(self, field.name)))
            except ValueError as error:
                problems.append(Problem(field.name, str(error)))
        if problems:
            raise SettingsError(problems)

    @property
    def script_url(self) -> str:
        return f"{self.script_origin}/{self.account}.js"

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, note: Callable[[str], None] | None = None,
                     **overrides: Any) -> "Settings":
        """Settings from a JSON-style mapping (Segment's keys), then `overrides` by Python name.

        A whole Segment settings object (`{"integrations": {"Drip": {...}}}`) is accepted too.
        Unknown keys are an error; Segment-only keys are ignored and reported through `note`.
        """
        values = {**python_names(data, note=note), **overrides}
        if values.get("account") is None:
            raise SettingsError([Problem("account", "is required: your Drip account ID, 7 to 9 digits, like 83702741")])
        return cls(**values)

    def replace(self, **changes: Any) -> "Settings":
        return dataclasses.replace(self, **changes)


def python_names(data: Mapping[str, Any], *, note: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Translate a JSON-style settings mapping to Python names; SettingsError for unknown keys."""
    if not isinstance(data, Mapping):
        raise SettingsError([Problem("settings", "a settings file holds one JSON object, like {\"account\": \"83702741\"}")])
    integrations = data.get("integrations")
    if isinstance(integrations, Mapping) and isinstance(integrations.get("Drip"), Mapping):
        data = integrations["Drip"]
    values: dict[str, Any] = {}
    problems = []
    for key, value in data.items():
        name = JSON_KEYS.get(key)
        if name is None and key in SEGMENT_ONLY_KEYS:
            if note:
                note(f"ignoring the Segment-only setting {show(key)}")
            continue
        if name is None:
            known = ", ".join(sorted(k for k in JSON_KEYS if k != "token"))
            # The key names the problem, so it is escaped and truncated like any shown value.
            hint = f" (the JSON key is {LABELS[key][0]})" if key in LABELS and key not in JSON_KEYS else ""
            problems.append(Problem(_key_label(key), f"unknown setting {show(key)}{hint}; the settings are {known}",
                                    as_written=True))
        elif name in values and values[name] != value:
            problems.append(Problem(name, "given twice (as apiToken and token) with different values"))
        else:
            values[name] = value
    if problems:
        raise SettingsError(problems)
    return values
