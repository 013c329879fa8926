"""Cloud mode's mapping: one Segment message → the Drip REST API v2 records that carry it.

Pure: no I/O, no clock, no state. What the relay remembers about people comes in through `recall` and
goes out through `Mapped.remember`; the caller owns storage and sending.

The rules are the browser loader's (templates/loader.js.j2), so that a call gives Drip the same answer
whether it went through a web page or through the relay: the same key formatting, the same revenue
arithmetic, the same e-mail shape, the same integrations switch. Where the loader relies on JavaScript
semantics (parseFloat, Math.round, String(number), JSON.stringify, white space as JavaScript counts
it), this module reproduces them exactly, because Drip's own Segment destination is JavaScript too and
the two modes are tested against one shared table of cases.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from ..messages import kind_of

__all__ = [
    "DripRecord", "Mapped", "InvalidMessage", "check_message", "map_message", "drip_requests", "format_key",
    "NO_EMAIL", "INTEGRATIONS", "NOT_FORWARDED", "KEY_STYLES",
]

# Why a message sends nothing (Mapped.skipped).
NO_EMAIL = "no email"
INTEGRATIONS = "integrations"
NOT_FORWARDED = "not forwarded"

KEY_STYLES = ("segment", "snake")
FORWARDED = ("identify", "track")
NOT_FORWARDED_TYPES = ("page", "screen", "group", "alias")

# Drip accepts event values (and lifetime values) from 0 to the largest 32-bit integer.
MAX_CENTS = 2_147_483_647


@dataclasses.dataclass(frozen=True)
class DripRecord:
    """One element of a Drip request's "subscribers" or "events" list, and whom it is about."""

    kind: str  # "subscriber" | "event" | "campaign"
    email: str  # the person; the relay keeps each person's requests in order on email.lower()
    record: dict[str, Any]  # exactly as it will be sent
    campaign_id: str | None = None  # for kind "campaign": POST /v2/{account}/campaigns/{id}/subscribers


@dataclasses.dataclass(frozen=True)
class Mapped:
    """What one message becomes: records to send, in order, or the reason nothing is sent."""

    records: tuple[DripRecord, ...] = ()  # a campaign record comes after its subscriber record
    skipped: str | None = None  # NO_EMAIL, INTEGRATIONS or NOT_FORWARDED
    remember: tuple[tuple[str, str, str], ...] = ()  # ("userId"|"anonymousId", id, email)


class InvalidMessage(ValueError):
    """Not a valid Segment call (not an object, unknown or missing type, a track without an event name).
    str() is one line, fit for an error answer or a log."""


Recall = Callable[[str, str], "str | None"]


def map_message(message: Mapping[str, Any], *, key_style: str = "segment", campaign_id: str | None = None,
                recall: Recall = lambda kind, ident: None) -> Mapped:
    """Map one Segment message (already merged with its batch's context and integrations).

    `key_style` and `campaign_id` are the source's settings; `recall(kind, ident)` gives the e-mail
    remembered for ("userId", id) or ("anonymousId", id), or None.
    """
    if key_style not in KEY_STYLES:
        raise ValueError(f"key_style must be 'segment' or 'snake', not {_show(key_style)}")
    check_message(message)
    kind = message.get("type")
    event = message.get("event")
    if kind in NOT_FORWARDED_TYPES:
        return Mapped(skipped=NOT_FORWARDED)

    drip = _drip_options(message.get("integrations"))
    if drip is None:
        return Mapped(skipped=INTEGRATIONS)
    context = _object(message.get("context"))
    user_id = _identity(message.get("userId"))
    anonymous_id = _identity(message.get("anonymousId"))
    if kind == "identify":
        mapping = _Identify(_object(message.get("traits")), key_style)
    else:
        mapping = _Track(event, _object(message.get("properties")), key_style,
                         message.get("timestamp"), message.get("originalTimestamp"))

    # The person: from the message itself, else remembered from an earlier message.
    email = mapping.email or _text_email(_object(context.get("traits")).get("email"))
    if email is None and _EMAIL_SHAPED.fullmatch(user_id):
        email = user_id
    remember: tuple[tuple[str, str, str], ...] = ()
    if email is not None:
        remember = tuple((name, ident, email) for name, ident in (("userId", user_id),
                                                                    ("anonymousId", anonymous_id)) if ident)
    else:
        email = (user_id and recall("userId", user_id)) or (anonymous_id and recall("anonymousId", anonymous_id))
        email = _text_email(email)
    if email is None:
        return Mapped(skipped=NO_EMAIL)

    if isinstance(mapping, _Track):
        return Mapped(records=(DripRecord("event", email, mapping.record(email)),), remember=remember)
    person = mapping.person(email, user_id, context)
    records = [DripRecord("subscriber", email, person)]
    campaign = _campaign(drip, campaign_id)
    if campaign is not None:
        fields = {key: _fresh(person[key]) for key in _CAMPAIGN_FIELDS if key in person}
        if isinstance(drip.get("doubleOptin"), bool):
            fields["double_optin"] = drip["doubleOptin"]
        records.append(DripRecord("campaign", email, fields, campaign))
    return Mapped(records=tuple(records), remember=remember)


def check_message(message: Any) -> None:
    """Raise InvalidMessage unless `message` is a Segment call: an object with a known type, and for a
    track an event name. The ingest asks this of a single call before storing anything, so a call it
    refuses leaves no trace in the spool (not even a count of skipped messages)."""
    if not isinstance(message, Mapping):
        raise InvalidMessage(f"a message must be a JSON object, not {kind_of(message)}")
    kind = message.get("type")
    if kind is None:
        raise InvalidMessage("the message has no type")
    if kind not in FORWARDED + NOT_FORWARDED_TYPES:
        raise InvalidMessage(f"unknown message type {_show(kind)}: expected identify, track, page, screen, "
                             "group or alias")
    event = message.get("event")
    if kind == "track" and not (isinstance(event, str) and event):
        raise InvalidMessage("track: event must be a non-empty string")


def drip_requests(account: str, records: Iterable[DripRecord]) -> list[dict[str, Any]]:
    """The single Drip requests that send `records`, in order: [{"path": ..., "body": ...}, ...]."""
    requests = []
    for record in records:
        if record.kind == "subscriber":
            requests.append({"path": f"/v2/{account}/subscribers", "body": {"subscribers": [record.record]}})
        elif record.kind == "event":
            requests.append({"path": f"/v2/{account}/events", "body": {"events": [record.record]}})
        elif record.kind == "campaign":
            requests.append({"path": f"/v2/{account}/campaigns/{record.campaign_id}/subscribers",
                             "body": {"subscribers": [record.record]}})
        else:
            raise ValueError(f"unknown record kind {record.kind!r}")
    return requests


# ---------------------------------------------------------------------------------------------------
# identify → a Drip person


# Drip's subscriber fields, as Drip spells them, and the analytics.js spelling of each that has one.
# A trait names a field by its camelCase spelling, or when its formatted key is Drip's spelling (so a
# key the loader would hand Drip as `first_name` is `first_name` here too).
_TEXT_FIELDS = ("user_id", "new_email", "first_name", "last_name", "address1", "address2", "city", "state",
                "zip", "country", "phone", "sms_number", "time_zone", "eu_consent_message")
_OTHER_FIELDS = ("tags", "remove_tags", "prospect", "base_lead_score", "eu_consent", "lifetime_value")
_DRIP_FIELDS = frozenset(_TEXT_FIELDS + _OTHER_FIELDS + ("email", "name", "address"))
_CAMEL = {"userId": "user_id", "newEmail": "new_email", "firstName": "first_name", "lastName": "last_name",
          "smsNumber": "sms_number", "timeZone": "time_zone", "euConsentMessage": "eu_consent_message",
          "removeTags": "remove_tags", "baseLeadScore": "base_lead_score", "euConsent": "eu_consent",
          "lifetimeValue": "lifetime_value"}
# Segment's address trait → Drip's address fields.
_ADDRESS = {"street": "address1", "address1": "address1", "address2": "address2", "city": "city",
            "state": "state", "postalCode": "zip", "postal_code": "zip", "zip": "zip", "country": "country"}
# The order of a person's fields in the record (the order changes nothing for Drip; it reads well).
_PERSON_ORDER = ("email", "user_id", "new_email", "first_name", "last_name", "address1", "address2", "city",
                 "state", "zip", "country", "phone", "sms_number", "time_zone", "ip_address", "tags",
                 "remove_tags", "prospect", "base_lead_score", "eu_consent", "eu_consent_message",
                 "lifetime_value", "custom_fields")
# What a campaign subscription carries (besides double_optin).
_CAMPAIGN_FIELDS = ("email", "user_id", "time_zone", "custom_fields", "tags", "prospect", "eu_consent",
                    "eu_consent_message")


class _Identify:
    """The traits of an identify, sorted into Drip fields and custom fields."""

    def __init__(self, traits: Mapping[str, Any], key_style: str) -> None:
        self.fields: dict[str, Any] = {}  # Drip field (or "name"/"address") → the trait's (copied) value
        self.custom: dict[str, Any] = {}  # custom field key → value
        self.has_id = False
        self.email: str | None = None
        copy = _Copier()
        for raw_key, value in traits.items():
            key = _safe_key(raw_key, key_style)
            if key is None:
                continue
            value = copy.plain(value, 1)
            if value is _SKIP:
                continue
            field = _CAMEL.get(raw_key) or (key if key in _DRIP_FIELDS else None)
            if field == "email":
                self.email = _text_email(value)
            elif field == "address" and not isinstance(value, dict):
                self.custom[_custom_key(key)] = value
            elif field is not None:
                self.fields[field] = value
            else:
                self.has_id = self.has_id or key == "id"
                self.custom[_custom_key(key)] = value

    def person(self, email: str, user_id: str, context: Mapping[str, Any]) -> dict[str, Any]:
        fields = self.fields
        person: dict[str, Any] = {"email": email}
        for field in _TEXT_FIELDS:
            text = _text(fields.get(field))
            if text is not None:
                person[field] = text
        if "user_id" not in person and user_id:
            person["user_id"] = user_id
        # name, split at its first space, fills in first_name and last_name when they are not given.
        name = fields.get("name")
        if isinstance(name, str) and name.strip(_JS_SPACE):
            first, _, last = name.strip(_JS_SPACE).partition(" ")
            person.setdefault("first_name", first)
            if last.strip(_JS_SPACE):
                person.setdefault("last_name", last.strip(_JS_SPACE))
        # The address object fills in the address fields that are not given as traits of their own.
        address, given = fields.get("address"), set(person)
        if isinstance(address, dict):
            for key, value in address.items():
                text = _text(value)
                if key in _ADDRESS and text is not None and _ADDRESS[key] not in given:
                    person[_ADDRESS[key]] = text
        if "time_zone" not in person and isinstance(context.get("timezone"), str):
            person["time_zone"] = context["timezone"]
        if isinstance(context.get("ip"), str):
            person["ip_address"] = context["ip"]
        for field in ("tags", "remove_tags"):
            tags = _tags(fields.get(field))
            if tags is not None:
                person[field] = tags
        if isinstance(fields.get("prospect"), bool):
            person["prospect"] = fields["prospect"]
        score = fields.get("base_lead_score")
        if _is_number(score) and float(score).is_integer():
            person["base_lead_score"] = int(score)
        if "eu_consent" in fields:
            consent = _js_string(fields["eu_consent"]).lower()
            if consent in ("granted", "denied"):
                person["eu_consent"] = consent
        if "lifetime_value" in fields:
            cents = _cents(_amount(fields["lifetime_value"]))
            if cents is not None:
                person["lifetime_value"] = cents
        # A custom field needs a name: one without (a trait keyed "") is left out, not risked with the rest.
        custom = {key: _custom_text(value) for key, value in self.custom.items() if value is not None and key}
        if user_id and not self.has_id:
            custom.setdefault("id", user_id)  # what the loader (and Segment's destination) hands Drip
        if custom:
            person["custom_fields"] = custom
        return {key: person[key] for key in _PERSON_ORDER if key in person}


def _campaign(drip: Mapping[str, Any], default: str | None) -> str | None:
    """The campaign to subscribe the person to: the call's, else the source's; false or null: none."""
    campaign = drip["campaignId"] if "campaignId" in drip else default
    if not _js_truthy(campaign):
        return None
    text = _js_string(campaign)
    return text if re.fullmatch(r"[0-9]{1,20}", text) else None


def _tags(value: Any) -> list[str] | None:
    """Tags as Drip takes them: a list of strings; a comma-separated string is split and trimmed."""
    if isinstance(value, str):
        return [tag for tag in _JS_COMMA.split(value.strip(_JS_SPACE)) if tag]
    if isinstance(value, list):
        texts = [_text(tag) for tag in value]  # strings as they are, numbers as their text
        return [text for text in texts if text is not None]
    return None


# ---------------------------------------------------------------------------------------------------
# track → a Drip event

# Segment's e-commerce spec: "Order Completed" carries its amount in `total` rather than `revenue`.
_ORDER_COMPLETED = re.compile(r"^[ _]?completed[ _]?order[ _]?|^[ _]?order[ _]?completed[ _]?\Z",
                              re.IGNORECASE | re.ASCII)


class _Track:
    """The properties of a track: copied with keys formatted; revenue → value; occurred_at; prospect."""

    def __init__(self, event: str, properties: Mapping[str, Any], key_style: str, timestamp: Any,
                 original_timestamp: Any) -> None:
        self.event = event
        copy = _Copier()
        self.properties: dict[str, Any] = {}
        for raw_key, value in properties.items():
            key = _safe_key(raw_key, key_style)
            value = _SKIP if key is None else copy.plain(value, 1)
            if value is not _SKIP:
                self.properties[key] = value

        # Revenue, read from the properties as given; value in integer cents.
        revenue = properties.get("revenue")
        if revenue is None and _ORDER_COMPLETED.search(event):
            revenue = properties.get("total")
        amount = _amount(revenue)
        if amount and not math.isnan(amount):  # no value for a zero revenue
            cents = _cents(amount)
            if cents is not None:
                self.properties["value"] = cents
                self.properties.pop("revenue", None)

        # occurred_at: the property when there is one (even an invalid one), else the message's time.
        if "occurred_at" in self.properties:
            when = self.properties.pop("occurred_at")
        else:
            when = timestamp if timestamp is not None else original_timestamp
        self.occurred_at = _iso_utc(when)
        self.email = _text_email(self.properties.pop("email", None))
        self.prospect = self.properties.pop("prospect", None)

    def record(self, email: str) -> dict[str, Any]:
        event: dict[str, Any] = {"email": email, "action": self.event, "properties": self.properties}
        if self.occurred_at is not None:
            event["occurred_at"] = self.occurred_at
        if isinstance(self.prospect, bool):
            event["prospect"] = self.prospect
        return event


def _amount(value: Any) -> float:
    """A money amount as the loader reads it: a number as is; a string without "$", through parseFloat;
    anything else is NaN."""
    if isinstance(value, str):
        return _js_parse_float(value.replace("$", ""))
    if _is_number(value):
        return _to_float(value)
    return math.nan


def _cents(amount: float) -> int | None:
    """Math.round(amount * 100) when it is within Drip's 0..2,147,483,647; else None."""
    if math.isnan(amount):
        return None
    cents = amount * 100
    if not math.isfinite(cents):
        return None
    whole = math.floor(cents)
    rounded = whole + 1 if cents - whole >= 0.5 else whole  # Math.round: halves go up, even negative ones
    return rounded if 0 <= rounded <= MAX_CENTS else None


_ISO_8601 = re.compile(
    r"(?P<y>[0-9]{4})-(?P<mo>[0-9]{2})-(?P<d>[0-9]{2})"
    r"(?:[Tt ](?P<h>[0-9]{2}):(?P<mi>[0-9]{2})(?::(?P<s>[0-9]{2})(?:[.,](?P<f>[0-9]+))?)?"
    r"(?:(?P<z>[Zz])|(?P<sign>[+-])(?P<oh>[0-9]{2})(?::?(?P<om>[0-9]{2}))?)?)?")


def _iso_utc(value: Any) -> str | None:
    """An ISO-8601 date or date-time, in UTC as JavaScript's toISOString writes it; None when invalid.

    A date alone is midnight UTC (as in JavaScript); a date-time without an offset is taken as UTC (a
    server has no user's local time to assume). Fractions beyond milliseconds are cut, as Date does.
    """
    match = _ISO_8601.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, _, sign, offset_hours, offset_minutes = match.groups()
    offset = None
    if sign:
        hours, minutes = int(offset_hours), int(offset_minutes or 0)
        if hours > 23 or minutes > 59:
            return None
        offset = (1 if sign == "+" else -1) * timedelta(hours=hours, minutes=minutes)
    millis = int((fraction or "0")[:3].ljust(3, "0"))
    try:
        # Naive, read as UTC once the offset is taken off: the same instant as an aware datetime
        # converted with astimezone, without its cost (this runs for every event the relay stores).
        utc = datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0))
        if offset:
            utc -= offset
    except (ValueError, OverflowError):
        return None
    # Integer fields rather than strftime-style formatting: a third of this function's time.
    return (f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}T{utc.hour:02d}:{utc.minute:02d}:{utc.second:02d}"
            f".{millis:03d}Z")


# ---------------------------------------------------------------------------------------------------
# Keys


_UNSAFE_KEYS = frozenset(("__proto__", "constructor", "prototype"))  # never copied, as in the loader
# White space and line terminators as JavaScript's \s, trim() and parseFloat count them.
_JS_SPACE = "\t\n\x0b\x0c\r \xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a" \
            "\u2028\u2029\u202f\u205f\u3000\ufeff"
_JS_SPACE_CLASS = "\\t\\n\\x0b\\x0c\\r \\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\ufeff"
_ONE_SPACE = re.compile(f"[{_JS_SPACE_CLASS}]")
_JS_COMMA = re.compile(f"[{_JS_SPACE_CLASS}]*,[{_JS_SPACE_CLASS}]*")
_EMAIL_SHAPED = re.compile(f"[^{_JS_SPACE_CLASS}@]+@[^{_JS_SPACE_CLASS}@.]+(?:\\.[^{_JS_SPACE_CLASS}@.]+)+")
_LOWER_UPPER = re.compile(r"([a-z0-9])([A-Z])")
_UPPER_WORD = re.compile(r"([A-Z])([A-Z][a-z])")
_NOT_ALNUM_RUN = re.compile(r"[^A-Za-z0-9]+")
_EDGE_UNDERSCORE = re.compile(r"^_|_\Z")
_NOT_WORD_CHAR = re.compile(r"[^A-Za-z0-9_]")


def format_key(key: str, key_style: str) -> str:
    """A top-level key as the loader formats it: `segment` turns each white-space character into "_";
    `snake` makes lower snake case. A key that would become empty stays as it was."""
    if key_style == "snake":
        formatted = _LOWER_UPPER.sub(r"\1_\2", key)
        formatted = _UPPER_WORD.sub(r"\1_\2", formatted)
        formatted = _EDGE_UNDERSCORE.sub("", _NOT_ALNUM_RUN.sub("_", formatted)).lower()
    else:
        formatted = _ONE_SPACE.sub("_", key)
    return formatted or key


def _safe_key(key: Any, key_style: str) -> str | None:
    """The formatted key, or None for a key the loader never copies."""
    if not isinstance(key, str) or key in _UNSAFE_KEYS:
        return None
    formatted = format_key(key, key_style)
    return None if formatted in _UNSAFE_KEYS else formatted


def _custom_key(key: str) -> str:
    """A custom field's name: the formatted key with every character Drip does not take as "_"."""
    return _NOT_WORD_CHAR.sub("_", key)


# ---------------------------------------------------------------------------------------------------
# Values as the loader hands them over, and as JavaScript writes them as text


class _Skip:
    def __repr__(self) -> str:
        return "<left out>"


_SKIP: Any = _Skip()


class _Copier:
    """Plain data as the loader copies it: no non-finite numbers, nothing nested over 32 deep, at most
    10,000 values (an array judged by its length first), no __proto__/constructor/prototype keys.
    In an array, a value left out becomes null."""

    def __init__(self) -> None:
        self.count = 0

    def plain(self, value: Any, depth: int) -> Any:
        if isinstance(value, list):
            if self.count + len(value) > 10_000:
                return _SKIP
        else:
            self.count += 1
            if self.count > 10_000:
                return _SKIP
        if value is None or isinstance(value, (bool, str)):
            return value
        if _is_number(value):
            return value if math.isfinite(_to_float(value)) else _SKIP
        if not isinstance(value, (list, dict)) or depth > 32:
            return _SKIP
        if isinstance(value, list):
            items = [self.plain(item, depth + 1) for item in value]
            return [None if item is _SKIP else item for item in items]
        copy = {}
        for key, item in value.items():
            if isinstance(key, str) and key not in _UNSAFE_KEYS:
                item = self.plain(item, depth + 1)
                if item is not _SKIP:
                    copy[key] = item
        return copy


def _fresh(value: Any) -> Any:
    """A copy of a record's value, so that two records never share a list or a dict."""
    if isinstance(value, dict):
        return {key: _fresh(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_fresh(item) for item in value]
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _to_float(value: int | float) -> float:
    """A number as JavaScript holds it: a double (an integer beyond a double's range is infinite)."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def _number_text(value: int | float) -> str:
    """A number as JavaScript's String() writes it (1e21 → "1e+21", 2.0 → "2", 1e-7 → "1e-7").
    An integer is written whole below 1e21, where JavaScript would write every digit too."""
    if isinstance(value, int) and abs(value) < 10**21:
        return str(value)
    number = _to_float(value)
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "Infinity" if number > 0 else "-Infinity"
    if number == 0:
        return "0"
    if number < 0:
        return "-" + _number_text(-number)
    # The shortest digits that read back as the number (Python's repr finds the same ones as JavaScript),
    # then JavaScript's layout: n is where the decimal point goes, relative to the digits.
    mantissa, _, exponent = repr(number).partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = (whole + fraction).lstrip("0")
    n = len(whole) + int(exponent or 0) - (len(whole + fraction) - len(digits))
    digits = digits.rstrip("0")
    k = len(digits)
    if k <= n <= 21:
        return digits + "0" * (n - k)
    if 0 < n <= 21:
        return f"{digits[:n]}.{digits[n:]}"
    if -6 < n <= 0:
        return "0." + "0" * -n + digits
    e = n - 1
    return f"{digits[0]}{'.' + digits[1:] if k > 1 else ''}e{'+' if e >= 0 else '-'}{abs(e)}"


def _text(value: Any) -> str | None:
    """A text field's value: a string as it is, a number as its text; anything else is left out."""
    if isinstance(value, str):
        return value
    if _is_number(value):
        return _number_text(value)
    return None


def _custom_text(value: Any) -> str:
    """A custom field's value as text, as Drip's own Segment destination sends it: strings as they are,
    numbers and booleans as their text, objects and arrays as compact JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list)):
        return _json_text(value)
    return _js_string(value)


def _js_string(value: Any) -> str:
    """JavaScript's String(value) for plain data (an array joins its items with ",")."""
    if isinstance(value, str):
        return value
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if _is_number(value):
        return _number_text(value)
    if isinstance(value, list):
        return ",".join("" if item is None else _js_string(item) for item in value)
    return "[object Object]"


def _js_truthy(value: Any) -> bool:
    if value is None or value is False or value == "":
        return False
    if _is_number(value):
        number = _to_float(value)
        return not (number == 0 or math.isnan(number))
    return True


def _json_text(value: Any) -> str:
    """JSON.stringify(value) for plain data: compact, numbers as JavaScript writes them, and object
    keys in JavaScript's order (array-index keys first, ascending, then the others as given)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return _json_string(value)
    if _is_number(value):
        return _number_text(value)
    if isinstance(value, list):
        return "[" + ",".join(_json_text(item) for item in value) + "]"
    indexes = sorted((key for key in value if _is_array_index(key)), key=int)
    others = [key for key in value if not _is_array_index(key)]
    return "{" + ",".join(f"{_json_string(key)}:{_json_text(value[key])}" for key in indexes + others) + "}"


def _is_array_index(key: str) -> bool:
    return key == "0" or (re.fullmatch(r"[1-9][0-9]{0,9}", key) is not None and int(key) < 2**32 - 1)


def _json_string(text: str) -> str:
    """A JSON string as JSON.stringify writes it: only what must be escaped is (a lone surrogate too)."""
    quoted = json.dumps(text, ensure_ascii=False)
    return re.sub("[\ud800-\udfff]", lambda match: f"\\u{ord(match.group()):04x}", quoted)


_JS_FLOAT = re.compile(r"[+-]?(?:Infinity|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)")


def _js_parse_float(text: str) -> float:
    """JavaScript's parseFloat: leading white space skipped, the longest number at the start read
    ("9.99abc" → 9.99, "1,5" → 1, ".5" → 0.5), NaN when there is none."""
    match = _JS_FLOAT.match(text.lstrip(_JS_SPACE))
    return float(match.group()) if match else math.nan


# ---------------------------------------------------------------------------------------------------
# The message


def _drip_options(integrations: Any) -> Mapping[str, Any] | None:
    """Drip's per-call options, or None when the call turns Drip off: integrations.Drip false, or
    integrations.All false with Drip not set to true or an object."""
    if not isinstance(integrations, Mapping):
        return {}
    drip = integrations.get("Drip")
    if isinstance(drip, Mapping):
        return drip
    if isinstance(drip, bool):
        return {} if drip else None
    return None if integrations.get("All") is False else {}


def _object(value: Any) -> Mapping[str, Any]:
    """A part of the message that should be an object: anything else counts as empty, as in the loader."""
    return value if isinstance(value, Mapping) else {}


def _identity(value: Any) -> str:
    """A userId or anonymousId as a string (a number becomes its text); "" when there is none."""
    if isinstance(value, str):
        return value
    if _is_number(value) and math.isfinite(_to_float(value)):
        return _number_text(value)
    return ""


def _text_email(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _show(value: Any) -> str:
    """A caller's value in an error message: on one line, at most 40 characters of it."""
    text = repr(value)
    return text if len(text) <= 40 else text[:39] + "…"
