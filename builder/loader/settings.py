"""Settings: one validated, immutable object, and the one declaration of every setting.

The names follow Segment's Drip destination, so an exported Segment settings object can be used as is.
Every problem names the setting, shows the offending value (truncated, control characters escaped) and
says what is allowed. Validation here is the first line of defence; escaping every value placed into
the JavaScript is the second.

Each setting is declared once, as a `Setting` in `SETTINGS`: its Python name, JSON key(s), command-line
flag, help, default and check. Validation, the defaults of the `Settings` dataclass, the command's flags,
the labels in messages and the README's table of settings all come from those records.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from ..messages import one_line, show

DEFAULT_SCRIPT_ORIGIN = "https://tag.getdrip.com"

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


def _numeric_id(value: Any, pattern: re.Pattern[str], what: str) -> str:
    """A Drip ID: a string of ASCII digits; a non-negative integer is accepted and turned into one."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10 ** 20:
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


@dataclasses.dataclass(frozen=True)
class _Choice:
    """A check that allows one of a few words (the command line shows them as the flag's metavar)."""

    choices: tuple[str, ...]

    def __call__(self, value: Any) -> str:
        if isinstance(value, str) and value in self.choices:
            return value
        raise ValueError(f"{show(value)} is not allowed: one of {', '.join(self.choices)}")


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


class _Required:
    """The default of a setting that has none: it must be given."""

    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()


@dataclasses.dataclass(frozen=True)
class Setting:
    """One setting, declared once."""

    name: str  # the Python name: the Settings field and the command-line parameter
    json_keys: tuple[str, ...]  # the first is the setting's JSON key; any others are accepted aliases
    flag: str  # the command-line flag; a boolean setting also has the --no- form
    check: Callable[[Any], Any]  # the value as given -> the value kept; ValueError says what is allowed
    help: str  # one sentence for --help
    doc: str  # the rule, as the README's table of settings states it (Markdown)
    default: Any = REQUIRED
    secret: bool = False  # never shown: not in repr(), not in messages

    @property
    def json_key(self) -> str:
        return self.json_keys[0]

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    @property
    def boolean(self) -> bool:
        return isinstance(self.default, bool)

    @property
    def flags(self) -> tuple[str, ...]:
        """The flag, and for a boolean setting the flag that turns it off."""
        return (self.flag, "--no-" + self.flag[2:]) if self.boolean else (self.flag,)

    @property
    def metavar(self) -> str | None:
        """How --help shows the value: the allowed words of a choice, else click's own."""
        return "|".join(self.check.choices) if isinstance(self.check, _Choice) else None

    def label(self, style: str) -> str:
        """How a message names the setting: by Python name, JSON key, or JSON key and flag."""
        return {"python": self.name, "json": self.json_key, "cli": f"{self.json_key} ({self.flag})"}[style]


SETTINGS: tuple[Setting, ...] = (
    Setting("account", ("account",), "--account", _account,
            help="Drip account ID: 7 to 9 digits, like 83702741 (required).",
            doc="**required**: your Drip account ID, 7 to 9 digits (e.g. `83702741`); an integer is accepted"),
    Setting("campaign_id", ("campaignId",), "--campaign-id", _campaign, default=None,
            help="Subscribe every identified user to this campaign.",
            doc="optional, 1–20 digits. **Every identified user is subscribed to this campaign** (a call can "
                "override it, see below)"),
    Setting("api_token", ("apiToken", "token"), "--api-token", _token, default=None, secret=True,
            help="Server-side secret: never written into browser output.",
            doc="optional, 20 to 128 letters and digits. A server-side secret: never written into browser output "
                "(an invalid one is reported by its length, never shown); given to a build it is checked, then "
                "ignored with one warning"),
    Setting("script_origin", ("scriptOrigin",), "--script-origin", _origin, default=DEFAULT_SCRIPT_ORIGIN,
            help="Where track.js comes from.",
            doc="default `https://tag.getdrip.com`; track.js is `{script_origin}/{account}.js`. `https://` "
                "without query or fragment; `http://` only for `localhost`/`127.0.0.1`"),
    Setting("global_name", ("globalName",), "--global", _global_name, default="analytics",
            help="Name of the analytics.js-style object.",
            doc="default `analytics`: where the analytics.js-style facade goes. An ASCII identifier, not a "
                "reserved word nor a name the page or Drip relies on (`window`, `driptag`, `_dcq`, …)"),
    Setting("key_style", ("keyStyle",), "--keys", _Choice(("segment", "snake")), default="segment",
            help="How top-level keys of traits and properties are written.",
            doc="`segment` (default: white space in top-level keys becomes `_`, as Segment does) or `snake` "
                "(top-level keys become lower snake case, as Drip's documentation asks: `firstName` → "
                "`first_name`)"),
    Setting("consent", ("consent",), "--consent", _Choice(("auto", "required")), default="auto",
            help="Load at once, or after consent.",
            doc="`auto` (default: load at once) or `required` (load nothing until `driptag.consent(true)`)"),
    Setting("callback_timeout_ms", ("callbackTimeout",), "--callback-timeout", _timeout, default=300,
            help="Milliseconds before a callback runs without Drip's answer.",
            doc="default 300, 0–10000: a call's callback runs when Drip answers, or after this long"),
    Setting("debug", ("debug",), "--debug", _flag, default=False,
            help="Log every bridged call with console.debug.",
            doc="default false: log every call handed to Drip with `console.debug`"),
    Setting("preload", ("preload",), "--preload", _flag, default=True,
            help="html: a <link rel=preload> for track.js before the <script>.",
            doc="default true: the `html` output starts with a `<link rel=\"preload\">` for `track.js` (never with "
                "`consent: required`). No effect on the `js` output"),
)

SETTING: dict[str, Setting] = {setting.name: setting for setting in SETTINGS}

# JSON key (and alias) -> Python name.
JSON_KEYS: dict[str, str] = {key: setting.name for setting in SETTINGS for key in setting.json_keys}


def _field(name: str) -> Any:
    """The dataclass field of a setting: its default (if any) from its declaration."""
    setting = SETTING[name]
    if setting.required:
        return dataclasses.field(repr=not setting.secret)
    return dataclasses.field(default=setting.default, repr=not setting.secret)


@dataclasses.dataclass(frozen=True)
class Problem:
    setting: str  # the Python name (or a key as written, see as_written)
    message: str
    as_written: bool = False  # `setting` is a key as the file wrote it (an unknown key): never relabelled

    def line(self, style: str = "python") -> str:
        """`setting: message`, the setting named by its Python name, JSON key, or JSON key and flag."""
        if self.as_written or self.setting not in SETTING:
            return f"{self.setting}: {self.message}"
        return f"{SETTING[self.setting].label(style)}: {self.message}"


class SettingsError(ValueError):
    """Invalid settings. `problems` has one entry per problem, each naming its setting."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        super().__init__("; ".join(p.line() for p in self.problems))


@dataclasses.dataclass(frozen=True)
class Settings:
    """Validated settings of one loader. Raises SettingsError (a ValueError) listing every problem.

    The fields are the settings of `SETTINGS`, in order, with their declared defaults.
    """

    account: str = _field("account")
    campaign_id: str | None = _field("campaign_id")
    api_token: str | None = _field("api_token")
    script_origin: str = _field("script_origin")
    global_name: str = _field("global_name")
    key_style: str = _field("key_style")
    consent: str = _field("consent")
    callback_timeout_ms: int = _field("callback_timeout_ms")
    debug: bool = _field("debug")
    preload: bool = _field("preload")

    def __post_init__(self) -> None:
        problems = []
        for setting in SETTINGS:
            try:
                object.__setattr__(self, setting.name, setting.check(getattr(self, setting.name)))
            except ValueError as error:
                problems.append(Problem(setting.name, str(error)))
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


def _declarations_agree() -> None:
    """The Settings fields are the declared settings, in order, and each default passes its own check."""
    fields = tuple(field.name for field in dataclasses.fields(Settings))
    if fields != tuple(SETTING):
        raise RuntimeError(f"the Settings fields {fields} are not the declared settings {tuple(SETTING)}")
    for setting in SETTINGS:
        if not setting.required and setting.check(setting.default) != setting.default:
            raise RuntimeError(f"the default of {setting.name} does not pass its own check")


_declarations_agree()


def check_each(values: Mapping[str, Any]) -> list[Problem]:
    """The problems of each value on its own, by Python name; nothing is required here. For values that
    are defaults of many builds (the flags of a batch): they are reported once, before any row."""
    problems = []
    for name, value in values.items():
        try:
            SETTING[name].check(value)
        except ValueError as error:
            problems.append(Problem(name, str(error)))
    return problems


def python_names(data: Mapping[str, Any], *, note: Callable[[str], None] | None = None,
                 keys: dict[str, str] | None = None) -> dict[str, Any]:
    """Translate a JSON-style settings mapping to Python names; SettingsError for unknown keys.

    `keys`, when given, is filled with the key each setting was written as (Python name -> JSON key), so a
    front end can name a bad value the way its file wrote it.
    """
    if not isinstance(data, Mapping):
        raise SettingsError([Problem("settings", "a settings file holds one JSON object, like {\"account\": \"83702741\"}")])
    integrations = data.get("integrations")
    if isinstance(integrations, Mapping) and isinstance(integrations.get("Drip"), Mapping):
        data = integrations["Drip"]
    values: dict[str, Any] = {}
    written: dict[str, str] = {}
    problems = []
    for key, value in data.items():
        name = JSON_KEYS.get(key)
        if name is None and key in SEGMENT_ONLY_KEYS:
            if note:
                note(f"ignoring the Segment-only setting {show(key)}")
            continue
        if name is None:
            known = ", ".join(sorted(setting.json_key for setting in SETTINGS))
            hint = f" (the JSON key is {SETTING[key].json_key})" if key in SETTING else ""
            # The key names the problem, so it is escaped and shortened like any value shown.
            problems.append(Problem(one_line(str(key), 40), f"unknown setting {show(key)}{hint}; the settings are {known}",
                                    as_written=True))
        elif name in values and values[name] != value:
            aliases = " and ".join(SETTING[name].json_keys)
            problems.append(Problem(name, f"given twice (as {aliases}) with different values"))
        else:
            values[name] = value
            written.setdefault(name, key)
    if problems:
        raise SettingsError(problems)
    if keys is not None:
        keys.update(written)
    return values


def settings_table() -> str:
    """The README's table of settings, in Markdown, from the declarations."""
    rows = ["| setting (Python) | JSON key | flag | rule |", "|---|---|---|---|"]
    for setting in SETTINGS:
        json_keys = " or ".join(f"`{key}`" for key in setting.json_keys)
        flags = " / ".join(f"`{flag}`" for flag in setting.flags)
        rows.append(f"| `{setting.name}` | {json_keys} | {flags} | {setting.doc} |")
    return "\n".join(rows) + "\n"
