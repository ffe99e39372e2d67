"""What administrators send: rules, destinations, DIDs, IVRs and integrations.

One set of models validates the rules file, the REST API and the UI's forms,
so each bad field gets the same message everywhere. ``problems()`` turns a
pydantic ``ValidationError`` into ``(field path, message)`` pairs such as
``("rules[2].custom_url", "must start with https://")``.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from crmroute.connectors.custom import validate_custom_url, validate_header
from crmroute.names import name_problem, tidy
from crmroute.routing.patterns import compile_pattern
from crmroute.routing.compare import Operator, check_operand, parse_operator
from crmroute.routing.conditions import valid_country
from crmroute.routing.schedules import check_timezone, format_hours, parse_hours
from crmroute.routing.trace import ROW_DEST_TYPES

CRM_KINDS = (
    "bullhorn", "directory", "dynamics2015", "hubspot", "pipedrive", "proprietary", "proprietary1",
    "salesforce", "sugarcrm", "suitecrm", "vtiger", "zendesk", "zoho",
)  # fmt: skip
CRM_MODULES = ("accounts", "contacts", "leads")
DESTINATION_TYPES = ("extension", "queue", "ivr", "recording")
AGENT_DESTINATIONS = ("owner", "last_agent")  # row types and default agents found per call (no option)

# Any script's letters and digits (the document's pattern; ``names.name_problem`` also allows combining marks).
NAME_PATTERN = re.compile(r"^[^\W_][\w .\-]*$")
FIELD_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-:]*$")  # API names, dotted for lookups
NUMBER_PATTERN = re.compile(r"^[0-9A-Za-z*#+_.\-]+$")  # extension/queue/IVR numbers
DID_PATTERN = re.compile(r"^(\+?[0-9*#]+|_[0-9A-Za-z*#+\[\]\-.!]+)$")  # a number or an Asterisk pattern
SOUND_PATTERN = re.compile(r"^[A-Za-z0-9_\-./]+$")
MOH_CLASS_PATTERN = re.compile(r"^[A-Za-z0-9_.\-]+$")  # a [class] of musiconhold.conf
USERNAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
MIN_PASSWORD_LENGTH = 8
ORDERING_OPERAND = r"^\s*[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]{1,4})?\s*$"  # a number (dates: below)

# Patterns and lengths that validators check with their own messages are given to the document as
# ``json_schema_extra``. Rules it states besides each field's own type (JSON Schema ``if``/``then``), so a
# request valid by the document is one these models accept; what depends on stored objects (a rule or
# destination by name) or on code (a regular expression compiling) cannot be said there.
def _when(field: str, values: list[str], then: dict[str, Any]) -> dict[str, Any]:
    return {"if": {"properties": {field: {"enum": values}}, "required": [field]}, "then": then}


def _text(**constraints: Any) -> dict[str, Any]:
    return {"type": "string", **constraints}



def _name(value: str) -> str:
    value = tidy(value)
    problem = name_problem(value)
    if problem:
        raise ValueError(problem)
    return value


Name = Annotated[str, Field(min_length=1, max_length=128, json_schema_extra={"pattern": NAME_PATTERN.pattern}),
                 AfterValidator(_name)]  # fmt: skip


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


Flag = Annotated[bool, Field(strict=True)]  # true or false: not 0, 1 or "yes"


DIGITS = {"type": "integer", "minimum": 0}


def _or_digits(schema: dict[str, Any], pattern: re.Pattern[str] | None = None) -> None:
    """The document's side of ``_digits_as_text``: the field also takes a non-negative integer."""
    if "anyOf" not in schema:
        text = {k: schema.pop(k) for k in list(schema) if k not in ("title", "description", "default")}
        schema["anyOf"] = [text | ({"pattern": pattern.pattern} if pattern else {})]
    schema["anyOf"].append(DIGITS)


def _digits_as_text(value: Any) -> Any:
    """YAML reads 100 as a number: a non-negative integer is taken as its text; other types go on to fail."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else value


CONDITION_KINDS = ("field", "schedule", "did", "country", "matches")


def _list_of_text(value: Any) -> Any:
    """A list, or one text with comma-separated items (YAML may read a number: its text)."""
    value = _digits_as_text(value)
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, list):
        return [_digits_as_text(v) for v in value]
    return value


def _condition_schema(schema: dict[str, Any]) -> None:
    """Exactly one kind, never null; operator and value only with ``field``, checked as a row's are."""
    for kind in CONDITION_KINDS:
        prop = schema["properties"][kind]
        prop["anyOf"] = [a for a in prop.get("anyOf", []) if a.get("type") != "null"]
        prop.pop("default", None)
    schema["oneOf"] = [{"required": [kind]} for kind in CONDITION_KINDS]
    schema["allOf"] = [
        {"if": {"not": {"required": ["field"]}}, "then": {"properties": {
            "operator": {"type": "null"}, "value": _text(pattern=r"^\s*$")}}},
        _when("operator", ["<", ">", "<=", ">="], {"properties": {"value": {"anyOf": [
            _text(pattern=ORDERING_OPERAND), _text(format="date"), _text(format="date-time")]}}}),
        _when("operator", ["contains", "starts_with", "regex"], {
            "required": ["value"], "properties": {"value": _text(pattern=r"\S")}}),
    ]


def _country_codes(schema: dict[str, Any]) -> None:
    import phonenumbers

    codes = sorted(phonenumbers.SUPPORTED_REGIONS)
    schema.pop("pattern", None)
    schema["enum"] = codes + [c.lower() for c in codes]


class ConditionIn(Strict):
    """One extra condition of a row (``routing/conditions.py``): exactly one of its kinds, optionally negated."""

    model_config = ConfigDict(populate_by_name=True, json_schema_extra=_condition_schema)

    field: str | None = Field(None, min_length=1, max_length=255, description="another CRM field of the record",
                              json_schema_extra={"pattern": FIELD_PATTERN.pattern})  # fmt: skip
    operator: Operator | None = Field(None, description="with field: how it is compared (default =)")
    value: str = Field("", max_length=1024, description="with field: what it is compared with")
    schedule: Name | None = Field(None, description="a schedule's name: holds while it is open")
    did: list[Annotated[str, Field(min_length=1, max_length=64, json_schema_extra={"pattern": DID_PATTERN.pattern})]] \
        | None = Field(None, min_length=1, max_length=100, description="the DID called is one of these numbers or "
                       "_patterns")  # fmt: skip
    country: list[Annotated[str, Field(min_length=2, max_length=2, json_schema_extra=_country_codes)]] \
        | None = Field(None, min_length=1, max_length=250, description="the caller's number is from one of these "
                       "countries (ISO 3166 codes such as GB)")  # fmt: skip
    matches: Literal["none", "one", "many"] | None = Field(None, description="how many CRM records matched the key")
    negate: Flag = Field(False, alias="not", description="true: the condition holds when it otherwise would not")

    @field_validator("operator", mode="before")
    @classmethod
    def _operator(cls, value: Any) -> Operator | None:
        return None if value is None or value == "" else parse_operator(str(value))

    @field_validator("value", mode="before")
    @classmethod
    def _value_text(cls, value: Any) -> str:
        return "" if value is None else str(value)

    @field_validator("field")
    @classmethod
    def _field(cls, value: str | None) -> str | None:
        if value is not None and not FIELD_PATTERN.match(value):
            raise ValueError("must be the CRM field's API name, e.g. Region or Account.Name")
        return value

    @field_validator("did", mode="before")
    @classmethod
    def _did_list(cls, value: Any) -> Any:
        return _list_of_text(value)

    @field_validator("did")
    @classmethod
    def _did(cls, value: list[str] | None) -> list[str] | None:
        for number in value or ():
            if not DID_PATTERN.match(number):
                raise ValueError(f"{number!r} is not a number (digits, optional leading +) or a pattern such as _555XXXX")
            if number.startswith("_"):
                compile_pattern(number)
        return value

    @field_validator("country", mode="before")
    @classmethod
    def _country_list(cls, value: Any) -> Any:
        return _list_of_text(value)

    @field_validator("country")
    @classmethod
    def _country(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        codes = [code.upper() for code in value]
        for code in codes:
            if not valid_country(code):
                raise ValueError(f"{code!r} is not a country code phonenumbers knows (ISO 3166, e.g. GB, US, DE)")
        return list(dict.fromkeys(codes))

    @model_validator(mode="after")
    def _one_kind(self) -> "ConditionIn":
        given = [kind for kind in CONDITION_KINDS if getattr(self, kind) is not None]
        if len(given) != 1:
            raise _FieldError(given[1] if len(given) > 1 else "",
                              "give exactly one of field, schedule, did, country or matches")  # fmt: skip
        if self.field is None and (self.operator is not None or self.value):
            raise _FieldError("operator" if self.operator is not None else "value",
                              "only a field condition has an operator and a value")  # fmt: skip
        if self.field is not None:
            if self.operator is None:
                self.operator = Operator.EQ
            message = check_operand(self.operator, self.value)
            if message:
                raise _FieldError("value", message)
        return self

    @property
    def kind(self) -> str:
        return next(kind for kind in CONDITION_KINDS if getattr(self, kind) is not None)

    def to_data(self) -> dict[str, Any]:
        """The stored and exported form: the kind's keys only, ``not`` when set."""
        if self.field is not None:
            data: dict[str, Any] = {"field": self.field, "operator": str(self.operator), "value": self.value}
        else:
            data = {self.kind: getattr(self, self.kind)}
        return data | ({"not": True} if self.negate else {})


class RowIn(Strict):
    model_config = ConfigDict(json_schema_extra={"allOf": [
        _when("operator", ["<", ">", "<=", ">="], {"properties": {"value": {"anyOf": [
            _text(pattern=ORDERING_OPERAND), _text(format="date"), _text(format="date-time")]}}}),
        _when("operator", ["contains", "starts_with", "regex"], {
            "required": ["value"], "properties": {"value": _text(pattern=r"\S")}}),
        _when("destination", ["queue", "ivr", "recording"], {"required": ["option"], "properties": {
            "option": {"anyOf": [_text(minLength=1), DIGITS]}}}),
        _when("destination", list(AGENT_DESTINATIONS), {"properties": {"option": _text(maxLength=0)}}),
    ]})  # fmt: skip

    operator: Operator
    value: str = Field("", max_length=1024)
    destination: Literal["queue", "ivr", "recording", "owner", "last_agent"] = Field(
        description="queue, ivr or recording (option names it); owner (the found record's owner's agent) or "
        "last_agent (the agent who last talked with the caller): the agent's extension, option empty"
    )  # fmt: skip
    option: str = Field("", max_length=128, validate_default=True, json_schema_extra=_or_digits)
    conditions: list[ConditionIn] = Field(default_factory=list, max_length=20,
                                          description="extra conditions; all must hold for the row to match")

    @field_validator("operator", mode="before")
    @classmethod
    def _operator(cls, value: Any) -> Operator:
        return parse_operator(str(value))

    @field_validator("conditions", mode="before")
    @classmethod
    def _no_conditions(cls, value: Any) -> Any:
        return [] if value is None else value

    @field_validator("value", mode="before")
    @classmethod
    def _value_text(cls, value: Any) -> str:
        return "" if value is None else str(value)  # YAML reads 50 as a number

    @field_validator("option", mode="before")
    @classmethod
    def _option_text(cls, value: Any) -> Any:
        return _digits_as_text(value)

    @field_validator("option")
    @classmethod
    def _option(cls, value: str, info: ValidationInfo) -> str:
        kind = info.data.get("destination")
        if kind in AGENT_DESTINATIONS and value:
            raise ValueError(f"leave empty for {kind} rows: the agent's extension is found per call")
        if kind not in AGENT_DESTINATIONS and not value:
            raise ValueError(f"required for a {kind or 'row'} destination")
        return value

    @model_validator(mode="after")
    def _operand(self) -> "RowIn":
        message = check_operand(self.operator, self.value)
        if message:
            raise _FieldError("value", message)
        return self


class HeaderIn(Strict):
    name: str = Field(min_length=1, max_length=128, json_schema_extra={"pattern": r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$"})
    value: str = Field("", max_length=4096, json_schema_extra={"pattern": r"^[\t\x20-\x7e]*$"})

    @model_validator(mode="after")
    def _valid(self) -> "HeaderIn":
        message = validate_header(self.name, self.value)
        if message:
            raise _FieldError("name" if "name" in message.lower() else "value", message)
        return self


class RuleIn(Strict):
    model_config = ConfigDict(json_schema_extra={"allOf": [
        _when("crm_source", ["integration"], {"required": ["integration", "crm_module"], "properties": {
            "integration": _text(minLength=1), "crm_module": {"enum": list(CRM_MODULES)}}}),
        _when("crm_source", ["custom"], {"required": ["custom_url"], "properties": {"custom_url": _text(
            pattern=r"^\s*[Hh][Tt][Tt][Pp][Ss]://[A-Za-z0-9]([A-Za-z0-9.\-]*[A-Za-z0-9])?(/[!-~]*)?\s*$")}}),
        _when("location", ["did"], {"properties": {"greeting": _text(maxLength=0)}}),
    ]})  # fmt: skip
    # Fields are declared in the order their checks need: a field's validator
    # sees the ones above it (``info.data``), so every bad field is reported.
    name: Name
    crm_field: str = Field(min_length=1, max_length=255, json_schema_extra={"pattern": FIELD_PATTERN.pattern})
    location: Literal["did", "ivr"]
    greeting: str = Field("", max_length=255, json_schema_extra={"pattern": r"^([A-Za-z0-9_\-./]+)?$"})
    dtmf_timeout_ms: int = Field(5000, ge=500, le=60_000)
    dtmf_max_digits: int = Field(10, ge=1, le=64)
    crm_source: Literal["integration", "custom"]
    integration: str | None = Field(None, validate_default=True)
    crm_module: Literal["accounts", "contacts", "leads", ""] = Field("", validate_default=True)
    crm_username: str = Field("", max_length=255)
    crm_password: str = Field("", max_length=4096)
    custom_url: str = Field("", max_length=2048, validate_default=True)
    custom_post: Flag = False
    custom_headers: list[HeaderIn] = Field(default_factory=list, max_length=32)
    default_destination: str = Field(min_length=1, max_length=64, json_schema_extra=_or_digits)
    default_voicemail: Literal["yes", "no", "not_set"] = "not_set"
    deadline_ms: int | None = Field(None, ge=50, le=60_000)
    cache_ttl_s: int | None = Field(None, ge=0, le=86_400, description="seconds a CRM value is reused; 0: never; "
                                    "empty: the integration's, else the global default")  # fmt: skip
    keep_company: Literal["none", "ringing", "moh"] = Field(
        "none", description="what the caller hears while the CRM is asked: nothing, ringing, or music on hold"
    )
    moh_class: str = Field("default", max_length=64, json_schema_extra={"pattern": MOH_CLASS_PATTERN.pattern}, description="music-on-hold class when keep_company is moh")
    default_agent: Literal["", "owner", "last_agent"] = Field(
        "", description="owner or last_agent: the default tries that agent first, then default_destination; "
        "empty: the default is default_destination"
    )  # fmt: skip
    check_availability: Flag = Field(
        True, description="owner / last_agent: skip an agent Asterisk reports busy or unreachable (AMI device "
        "state; unknown counts as available)"
    )  # fmt: skip
    last_agent_days: int = Field(30, ge=1, le=3650, description="last_agent: how many days back the call log "
                                 "is searched")  # fmt: skip
    last_agent_outbound: Flag = Field(False, description="last_agent: outbound calls to the caller count too")
    last_agent_min_talk_s: int = Field(5, ge=0, le=86_400, description="last_agent: calls that talked less "
                                       "(seconds) do not count")  # fmt: skip
    rows: list[RowIn] = Field(default_factory=list, max_length=500)

    @field_validator("default_agent", mode="before")
    @classmethod
    def _default_agent(cls, value: Any) -> Any:
        return "" if value is None or value == "none" else value

    @field_validator("crm_field")
    @classmethod
    def _field(cls, value: str) -> str:
        if not FIELD_PATTERN.match(value):
            raise ValueError("must be the CRM field's API name, e.g. Account_Name or Account.Name")
        return value

    @field_validator("greeting")
    @classmethod
    def _greeting(cls, value: str, info: ValidationInfo) -> str:
        if value and not SOUND_PATTERN.match(value):
            raise ValueError("must be a sound file name such as greeting-default-attendant")
        if value and info.data.get("location") == "did":
            raise ValueError("only IVR rules have a greeting")
        return value

    @field_validator("integration")
    @classmethod
    def _integration(cls, value: str | None, info: ValidationInfo) -> str | None:
        if info.data.get("crm_source") == "integration" and not value:
            raise ValueError("required when the CRM is an integration")
        return value

    @field_validator("crm_module")
    @classmethod
    def _module(cls, value: str, info: ValidationInfo) -> str:
        if info.data.get("crm_source") == "integration" and not value:
            raise ValueError("required when the CRM is an integration: accounts, contacts or leads")
        return value

    @field_validator("custom_url")
    @classmethod
    def _custom_url(cls, value: str, info: ValidationInfo) -> str:
        if info.data.get("crm_source") == "custom":
            message = validate_custom_url(value) if value else "required for a Custom CRM"
            if message:
                raise ValueError(message)
        return value

    @field_validator("moh_class")
    @classmethod
    def _moh_class(cls, value: str) -> str:
        if not MOH_CLASS_PATTERN.match(value):
            raise ValueError("must be a music-on-hold class name such as default (letters, digits, - _ .)")
        return value

    @field_validator("default_destination", mode="before")
    @classmethod
    def _default_text(cls, value: Any) -> Any:
        return _digits_as_text(value)

    @field_validator("default_voicemail", mode="before")
    @classmethod
    def _voicemail(cls, value: Any) -> Any:
        if value is True:  # YAML reads an unquoted yes/no as a boolean
            return "yes"
        if value is False:
            return "no"
        return value


class DestinationIn(Strict):
    model_config = ConfigDict(json_schema_extra={"allOf": [
        _when("type", ["extension", "queue", "ivr"], {"required": ["number"], "properties": {
            "number": {"anyOf": [_text(minLength=1, pattern=NUMBER_PATTERN.pattern), DIGITS]}}}),
        _when("type", ["recording"], {"required": ["name"], "properties": {
            "name": _text(minLength=1, pattern=SOUND_PATTERN.pattern)}}),
    ]})  # fmt: skip

    type: Literal["extension", "queue", "ivr", "recording"]
    number: str | None = Field(None, max_length=64, validate_default=True, json_schema_extra=_or_digits)
    name: str = Field("", max_length=128, validate_default=True)
    voicemail: Flag = False

    @field_validator("number", mode="before")
    @classmethod
    def _number_text(cls, value: Any) -> Any:
        return _digits_as_text(value)

    @field_validator("number")
    @classmethod
    def _number(cls, value: str | None, info: ValidationInfo) -> str | None:
        kind = info.data.get("type")
        if kind is None or kind == "recording":
            return value
        if not value:
            raise ValueError(f"required for a destination of type {kind}")
        if not NUMBER_PATTERN.match(value):
            raise ValueError("use digits, letters and * # + - _ . only")
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str, info: ValidationInfo) -> str:
        if info.data.get("type") == "recording":
            if not value:
                raise ValueError("required: the recording's sound file name")
            if not SOUND_PATTERN.match(value):
                raise ValueError("must be a sound file name such as closed-today")
        return value

    @property
    def ref(self) -> str:
        """What rows and defaults use to name this destination."""
        return self.name if self.type == "recording" else str(self.number)


class DidIn(Strict):
    number: str = Field(min_length=1, max_length=64, json_schema_extra=lambda s: _or_digits(s, DID_PATTERN))
    rule: Name
    name: str = Field("", max_length=128)

    @field_validator("number", mode="before")
    @classmethod
    def _number(cls, value: Any) -> Any:
        value = _digits_as_text(value)
        if not isinstance(value, str):
            return value  # refused as not text
        value = value.strip()
        if not DID_PATTERN.match(value):
            raise ValueError("must be a number (digits, optional leading +) or an Asterisk pattern such as _555XXXX")
        if value.startswith("_"):
            compile_pattern(value)  # its ValueError names the problem
        return value


class IvrIn(Strict):
    number: str = Field(min_length=1, max_length=64, json_schema_extra=lambda s: _or_digits(s, NUMBER_PATTERN))
    rule: Name
    name: str = Field("", max_length=128)

    @field_validator("number", mode="before")
    @classmethod
    def _number(cls, value: Any) -> Any:
        value = _digits_as_text(value)
        if not isinstance(value, str):
            return value  # refused as not text
        value = value.strip()
        if not NUMBER_PATTERN.match(value):
            raise ValueError("use digits, letters and * # + - _ . only")
        return value


# The fields a logged call's subject and description templates may use, as {name}.
CALL_FIELDS = (
    "direction", "outcome", "external_number", "extension", "did", "queue", "started_at", "ring_seconds",
    "talk_seconds", "duration", "recording", "rule", "routing_status", "destination", "call_id",
)  # fmt: skip
DEFAULT_SUBJECT = "{direction} call {outcome}: {external_number}"
DEFAULT_DESCRIPTION = (
    "{direction} call from/to {external_number}, {outcome}. Started {started_at}, rang {ring_seconds} s, "
    "talked {talk_seconds} s. Extension {extension}. Routing: {routing_status} via {rule} to {destination}. "
    "Call id {call_id}."
)


def _template(value: str) -> str:
    import string

    try:
        names = [name for _, name, _, _ in string.Formatter().parse(value) if name is not None]
    except ValueError as exc:
        raise ValueError(f"not a valid template: {exc}") from None
    unknown = [n for n in names if n not in CALL_FIELDS]
    if unknown:
        raise ValueError(f"unknown field {{{unknown[0]}}}; use {', '.join('{' + f + '}' for f in CALL_FIELDS)}")
    return value


Template = Annotated[str, Field(max_length=2000), AfterValidator(_template)]


class LogOptions(Strict):
    inbound_answered: Flag = False
    inbound_missed: Flag = False
    outbound: Flag = False
    create_unknown: Flag = False
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    subject_template: Template = DEFAULT_SUBJECT
    description_template: Template = DEFAULT_DESCRIPTION
    link_record: Literal["routed", "lookup"] = Field(
        "routed", description="routed: the record found while routing, else a lookup by number; lookup: always look up"
    )


class IntegrationIn(Strict):
    name: Name
    kind: str = Field(json_schema_extra={"enum": list(CRM_KINDS)})
    enabled: Flag = True
    settings: dict[str, Any] = Field(default_factory=dict)
    secrets: dict[str, str] = Field(default_factory=dict)
    log_options: LogOptions = Field(default_factory=LogOptions)

    @field_validator("kind")
    @classmethod
    def _kind(cls, value: str) -> str:
        if value not in CRM_KINDS:
            raise ValueError(f"unknown CRM kind; use one of {', '.join(CRM_KINDS)}")
        return value

    @field_validator("secrets", mode="before")
    @classmethod
    def _secret_text(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: "" if v is None else str(v) for k, v in value.items()}
        return value


# --- agents ---------------------------------------------------------------------

EXTENSION_PATTERN = re.compile(r"^[0-9A-Za-z*#+_.\-]+$")
# An Asterisk device state name: technology/resource (PJSIP/201, Local/201@agents) or provider:name (Custom:DND201).
DEVICE_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]*[/:][^\s&,|]+$")
EMAIL_PATTERN = re.compile(r"^[^\s@]+@[^\s@]+$")
USER_ID_PATTERN = re.compile(r"^\S+$")


class IdentityIn(Strict):
    """Who an agent is in one integration's CRM: the user id, the e-mail, or both."""

    model_config = ConfigDict(json_schema_extra={"anyOf": [
        {"required": ["user_id"], "properties": {"user_id": {"minLength": 1}}},
        {"required": ["email"], "properties": {"email": {"minLength": 1}}},
    ]})  # fmt: skip

    user_id: str = Field("", max_length=255, description="the CRM user id (Salesforce 005..., HubSpot owner id ...)",
                         json_schema_extra={"pattern": "^([^\\s@]+)?$"})
    email: str = Field("", max_length=255, description="the CRM user's e-mail; matched ignoring case",
                       json_schema_extra={"pattern": "^([^\\s@]+@[^\\s@]+)?$"})

    @field_validator("user_id")
    @classmethod
    def _user_id(cls, value: str) -> str:
        if value and (not USER_ID_PATTERN.match(value) or "@" in value):
            raise ValueError("a CRM user id has no spaces and no @ (an e-mail goes in email)")
        return value

    @field_validator("email")
    @classmethod
    def _email(cls, value: str) -> str:
        if value and not EMAIL_PATTERN.match(value):
            raise ValueError("must be an e-mail address such as olivia.owner@example.com")
        return value

    @model_validator(mode="after")
    def _one_given(self) -> "IdentityIn":
        if not self.user_id and not self.email:
            raise ValueError("give the CRM user id, the e-mail, or both")
        return self


def _identities_schema(schema: dict[str, Any]) -> None:
    """The document's side of ``_identity``: a value may also be the short text (or a number: a user id)."""
    short = {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^([^\\s@]+|[^\\s@]+@[^\\s@]+)$"}
    schema["additionalProperties"] = {"anyOf": [short, DIGITS, schema["additionalProperties"]]}


def _identity(value: Any) -> Any:
    """The rules file's short form: a text is an e-mail when it holds an @, else a CRM user id."""
    value = _digits_as_text(value)
    if isinstance(value, str):
        value = value.strip()
        return {"email": value} if "@" in value else {"user_id": value}
    return value


class AgentIn(Strict):
    name: Name
    extension: str = Field(min_length=1, max_length=64, description="the number the dialplan rings, e.g. 201",
                           json_schema_extra=lambda s: _or_digits(s, EXTENSION_PATTERN))  # fmt: skip
    devices: list[Annotated[str, Field(min_length=1, max_length=128, json_schema_extra={"pattern": DEVICE_PATTERN.pattern})]] = Field(
        default_factory=list, max_length=20,
        description="Asterisk devices whose state says whether the agent is free; empty: PJSIP/{extension}",
    )  # fmt: skip
    identities: dict[Annotated[str, Field(min_length=1, max_length=128)], IdentityIn] = Field(
        default_factory=dict, json_schema_extra=_identities_schema,
        description="integration name -> the CRM user id or e-mail (text: an e-mail when it holds an @), or {user_id, email}",
    )  # fmt: skip

    @field_validator("extension", mode="before")
    @classmethod
    def _extension(cls, value: Any) -> Any:
        value = _digits_as_text(value)
        if isinstance(value, str) and value.strip() and not EXTENSION_PATTERN.match(value.strip()):
            raise ValueError("use digits, letters and * # + - _ . only")
        return value

    @field_validator("devices")
    @classmethod
    def _device_names(cls, value: list[str]) -> list[str]:
        for device in value:
            if not DEVICE_PATTERN.match(device):
                raise ValueError(f"{device!r} is not an Asterisk device such as PJSIP/201 or Local/201@agents")
        seen: set[str] = set()
        return [d for d in value if not (d.casefold() in seen or seen.add(d.casefold()))]  # repeats dropped

    @field_validator("identities", mode="before")
    @classmethod
    def _short_identities(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: _identity(v) for k, v in value.items()}
        return value


# --- schedules --------------------------------------------------------------------


class HolidayIn(Strict):
    date: datetime.date
    name: str = Field("", max_length=128)

    @field_validator("date", mode="before")
    @classmethod
    def _date_text(cls, value: Any) -> Any:
        if not isinstance(value, (str, datetime.date)):
            raise ValueError("must be a date such as 2026-12-25")
        return value


def _holiday(value: Any) -> Any:
    """The short form: a date alone (YAML reads an unquoted 2026-12-25 as a date)."""
    return {"date": value} if isinstance(value, (str, datetime.date)) else value


class ScheduleIn(Strict):
    """Weekly opening hours with holidays in a time zone (``routing/schedules.py``), used by rows' conditions."""

    name: Name
    timezone: str = Field(min_length=1, max_length=64, description="IANA time zone, e.g. Europe/London")
    hours: dict[Annotated[str, Field(min_length=3, max_length=7)],
                list[Annotated[str, Field(max_length=11)]] | Annotated[str, Field(max_length=200)] | None] = Field(
        default_factory=dict, max_length=7,
        description="day (mon..sun) or day range (mon-fri) -> time ranges such as 09:00-17:30; days not named "
        "are closed",
    )  # fmt: skip
    holidays: list[HolidayIn] = Field(default_factory=list, max_length=1000,
                                      description="dates closed all day, in the schedule's time zone")

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        message = check_timezone(value)
        if message:
            raise ValueError(message)
        return value

    @field_validator("hours", mode="before")
    @classmethod
    def _hours_null(cls, value: Any) -> Any:
        return {} if value is None else value

    @field_validator("hours")
    @classmethod
    def _hours(cls, value: dict[str, Any]) -> dict[str, Any]:
        return format_hours(parse_hours(value))  # its ValueError names the problem

    @field_validator("holidays", mode="before")
    @classmethod
    def _short_holidays(cls, value: Any) -> Any:
        return [_holiday(v) for v in value] if isinstance(value, list) else value

    @field_validator("holidays")
    @classmethod
    def _holidays(cls, value: list[HolidayIn]) -> list[HolidayIn]:
        seen: set[datetime.date] = set()
        for holiday in value:
            if holiday.date in seen:
                raise ValueError(f"{holiday.date} is given twice")
            seen.add(holiday.date)
        return sorted(value, key=lambda h: h.date)

    def to_data(self) -> dict[str, Any]:
        return {"name": self.name, "timezone": self.timezone, "hours": self.hours,
                "holidays": [h.date.isoformat() if not h.name else {"date": h.date.isoformat(), "name": h.name}
                             for h in self.holidays]}  # fmt: skip


def _sections_may_be_null(schema: dict[str, Any]) -> None:
    """Say what ``_none_is_empty`` accepts: a section may be null (YAML's bare ``ivrs:``)."""
    for name, prop in schema.get("properties", {}).items():
        listed = {k: v for k, v in prop.items() if k not in ("title", "default")}
        schema["properties"][name] = {"anyOf": [listed, {"type": "null"}], "title": prop.get("title", name)}


class RulesFile(Strict):
    """The rules file of SPEC 10 (also the body of ``POST /api/v1/import``)."""

    model_config = ConfigDict(json_schema_extra=_sections_may_be_null)
    integrations: list[IntegrationIn] = Field(default_factory=list)
    destinations: list[DestinationIn] = Field(default_factory=list)
    rules: list[RuleIn] = Field(default_factory=list)
    dids: list[DidIn] = Field(default_factory=list)
    ivrs: list[IvrIn] = Field(default_factory=list)
    agents: list[AgentIn] = Field(default_factory=list)
    schedules: list[ScheduleIn] = Field(default_factory=list)

    @field_validator("integrations", "destinations", "rules", "dids", "ivrs", "agents", "schedules", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return [] if value is None else value


# --- errors ------------------------------------------------------------------


class _FieldError(ValueError):
    """Raised inside a model validator to blame one field of that model."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}\x00{message}")


def problems(error: ValidationError, prefix: str = "") -> list[tuple[str, str]]:
    """``(path, message)`` for each error, e.g. ``("rules[2].custom_url", "must start with https://")``."""
    return error_problems(error.errors(include_url=False), prefix)


def error_problems(errors: Sequence[Any], prefix: str = "", *, request: bool = False) -> list[tuple[str, str]]:
    """The same for pydantic's error dicts; ``request`` drops FastAPI's body/query/path root."""
    found: list[tuple[str, str]] = []
    for item in errors:
        loc = tuple(item.get("loc", ()))
        if request and loc and loc[0] in ("body", "query", "path"):
            loc = loc[1:]
        path = format_path(loc, prefix)
        message = str(item.get("msg", "invalid")).removeprefix("Value error, ")
        if "\x00" in message:  # blame set by a model validator
            field, _, message = message.partition("\x00")
            path = join_path(path, field)
        elif item.get("type") == "json_invalid":  # FastAPI could not parse the request body
            path, message = prefix, f"not valid JSON: {item.get('ctx', {}).get('error', message)}"
        elif item.get("type") == "missing":
            message = "required"
        elif item.get("type") == "extra_forbidden":
            message = "unknown field"
        elif item.get("type") == "literal_error":
            expected = str(item.get("ctx", {}).get("expected", ""))
            expected = expected.removeprefix("'', ").removesuffix(" or ''").replace(", '',", ",")  # "" goes unsaid
            if " or " not in expected and ", " in expected:
                head, _, last = expected.rpartition(", ")
                expected = f"{head} or {last}"
            message = "must be one of " + expected.replace("'", "")
        else:
            message = plain_message(item.get("type", ""), item.get("ctx") or {}, message)
        found.append((path, message))
    return found


# pydantic's messages in the admin's words, by error type ({name} from the error's ctx).
PLAIN_MESSAGES = {
    "string_too_long": "must be at most {max_length} characters",
    "too_long": "at most {max_length} items",
    "too_short": "at least {min_length} items",
    "int_parsing": "must be a whole number", "int_type": "must be a whole number",
    "int_from_float": "must be a whole number", "float_parsing": "must be a number", "float_type": "must be a number",
    "greater_than_equal": "must be {ge} or more", "less_than_equal": "must be {le} or less",
    "greater_than": "must be more than {gt}", "less_than": "must be less than {lt}",
    "bool_type": "must be true or false", "bool_parsing": "must be true or false",
    "string_type": "must be text", "list_type": "must be a list", "dict_type": "must be an object (key: value)",
    "model_type": "must be an object (key: value)", "model_attributes_type": "must be an object (key: value)",
    "string_pattern_mismatch": "holds characters that are not allowed here",
}  # fmt: skip


def plain_message(kind: str, ctx: dict[str, Any], message: str) -> str:
    if kind == "string_too_short":
        length = ctx.get("min_length", 1)
        return "required" if length == 1 else f"must be at least {length} characters"
    template = PLAIN_MESSAGES.get(kind)
    if template is None:
        return message
    try:
        return template.format(**ctx)
    except (KeyError, IndexError):
        return message


def format_path(loc: tuple[Any, ...], prefix: str = "") -> str:
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part not in ("function-after", "function-before") and not str(part).startswith("function-"):
            path = join_path(path, str(part))
    return path


def join_path(path: str, field: str) -> str:
    if not field:
        return path
    return f"{path}.{field}" if path else field


# --- what the REST API returns (the OpenAPI document's response models) -------------
#
# The store's ``to_public()`` functions build these shapes; parts that do not
# apply are left out (as in the rules file), and secrets are always the mask.


class _Public(BaseModel):
    model_config = ConfigDict(extra="allow")


class Page(BaseModel):
    """One page of a list: ``items`` from ``offset``, ``total`` matching in all."""

    total: int
    offset: int
    limit: int


class RowPublic(_Public):
    operator: str
    value: str
    destination: str
    option: str
    conditions: list[dict[str, Any]] | None = Field(None, description="extra conditions, left out when none")


class SchedulePublic(_Public):
    id: int
    name: str
    timezone: str
    hours: dict[str, list[str]]
    holidays: list[Any]
    used_by: list[str] = Field(description="names of the rules whose rows use the schedule")


class SchedulePage(Page):
    items: list[SchedulePublic]


class HeaderPublic(_Public):
    name: str
    value: str = Field(description="always ********: header values are write-only")


class RuleUsage(_Public):
    dids: list[str] = Field(description="numbers of the DIDs using the rule")
    ivrs: list[str] = Field(description="numbers of the IVRs using the rule")


class RulePublic(_Public):
    id: int
    name: str
    crm_field: str
    location: str
    greeting: str | None = None
    dtmf_timeout_ms: int | None = None
    dtmf_max_digits: int | None = None
    crm_source: str
    integration: str | None = None
    crm_module: str | None = None
    crm_username: str | None = None
    crm_password: str | None = Field(None, description="******** when set: write-only; send it back to keep it")
    custom_url: str | None = None
    custom_post: bool | None = None
    custom_headers: list[HeaderPublic] | None = None
    default_destination: str
    default_voicemail: str
    deadline_ms: int | None = None
    cache_ttl_s: int | None = None
    keep_company: str = "none"
    moh_class: str = "default"
    default_agent: str = ""
    check_availability: bool = True
    last_agent_days: int = 30
    last_agent_outbound: bool = False
    last_agent_min_talk_s: int = 5
    rows: list[RowPublic]
    used_by: RuleUsage


class RulePage(Page):
    items: list[RulePublic]


class DestinationPublic(_Public):
    id: int
    type: str
    number: str | None = None
    name: str
    voicemail: bool | None = None


class DestinationPage(Page):
    items: list[DestinationPublic]


class AssignmentPublic(_Public):
    id: int
    number: str
    name: str
    rule: str
    rule_id: int


class AssignmentPage(Page):
    items: list[AssignmentPublic]


class IntegrationUsage(_Public):
    rules: list[str]


class IntegrationPublic(_Public):
    id: int
    name: str
    kind: str
    enabled: bool
    settings: dict[str, Any]
    secrets: dict[str, str] = Field(description="names of the stored secrets, values ********")
    log_options: dict[str, Any]
    used_by: IntegrationUsage


class IntegrationPage(Page):
    items: list[IntegrationPublic]


class IdentityPublic(_Public):
    user_id: str
    email: str


class AgentPublic(_Public):
    id: int
    name: str
    extension: str
    devices: list[str] = Field(description="as configured; empty: the default device")
    watched_devices: list[str] = Field(description="the devices whose state is watched (PJSIP/{extension} by default)")
    identities: dict[str, IdentityPublic] = Field(description="integration name -> CRM user id and e-mail")
    availability: dict[str, Any] = Field(description="state (available, busy, unavailable, unknown) and its sources; "
                                                     "unknown when AMI is off: routing assumes available")


class AgentPage(Page):
    items: list[AgentPublic]


class AgentSyncIn(Strict):
    integration: Name = Field(description="the integration whose CRM users are matched to agents by e-mail")


class AgentSyncResult(_Public):
    integration: str
    users: int = Field(description="CRM users listed")
    matched: list[str] = Field(description="explanations: 'Olivia Owner, olivia@... -> extension 201 (agent Olivia)'")
    updated: int = Field(description="agents whose identity changed")
    unmatched_agents: list[str] = Field(description="agents with an e-mail no CRM user has")


class IntegrationTestIn(Strict):
    key: str | None = Field(None, max_length=64, description="a phone number or account key to look up")
    module: Literal["accounts", "contacts", "leads"] = "contacts"
    fields: list[str] = Field(default_factory=list, max_length=20, description="CRM field API names to read")


class DecisionPublic(_Public):
    id: int
    created_at: str
    source: str
    call_id: str
    channel: str
    caller: str
    did: str
    ivr: str
    rule: str
    lookup_key: str
    key_source: str
    value: str
    record: dict[str, str] | None = Field(None, description="the CRM record found: module and id (integrations)")
    row: int | None
    dest_type: str
    dest: str
    status: str
    reason: str
    error: str
    crm_ms: float | None
    total_ms: float
    cached: bool = Field(False, description="the value came from crmroute's value cache, not from the CRM")
    trace: list[Any] | None = Field(None, description="only in GET /decisions/{id}")


class DecisionPage(Page):
    items: list[DecisionPublic]


class RouteIn(Strict):
    """A dry run: exactly one of ``did``, ``ivr``, ``rule``."""

    model_config = ConfigDict(json_schema_extra={"oneOf": [
        {"required": [name], "properties": {name: _text(pattern=r"\S")}} for name in ("did", "ivr", "rule")
    ]})  # fmt: skip

    did: str | None = Field(None, max_length=64)
    ivr: str | None = Field(None, max_length=64)
    rule: str | None = Field(None, max_length=128)
    caller: str = Field("", max_length=64)
    dtmf: str = Field("", max_length=64)
    at: datetime.datetime | None = Field(None, description="the call's instant for schedule conditions, e.g. "
                                         "2026-03-30T09:15:00+01:00 (an instant without offset is UTC); default: now")

    @field_validator("at", mode="before")
    @classmethod
    def _at_text(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, (str, datetime.datetime)):
            raise ValueError("must be a date and time such as 2026-03-30T09:15:00+01:00")
        return value

    @field_validator("at")
    @classmethod
    def _aware(cls, value: datetime.datetime | None) -> datetime.datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=datetime.timezone.utc)
        return value

    @model_validator(mode="after")
    def _one_target(self) -> "RouteIn":
        given = [name for name in ("did", "ivr", "rule") if getattr(self, name)]
        if len(given) != 1:
            raise _FieldError(given[1] if len(given) > 1 else "did",
                              "give exactly one of a DID number, an IVR number or a rule")
        return self


class RouteDestination(_Public):
    type: str
    option: str


class RouteResult(_Public):
    status: str
    rule: str
    destination: RouteDestination | None
    value: str
    row: int | None
    key: str
    key_source: str
    reason: str
    error: str
    crm_ms: float | None
    total_ms: float
    cached: bool = Field(False, description="always false: a dry run asks the CRM")
    agent: str = Field("", description="owner / last_agent destinations: the chosen agent's name (the trace "
                       "says why others were skipped)")  # fmt: skip
    steps: list[str]
    did: str
    ivr: str
    caller: str
    dtmf: str
    jump: str | None = Field(description="context,extension,priority; null in variables mode or with no destination")


class SectionCounts(_Public):
    created: int
    updated: int
    unchanged: int


class ImportSummaryPublic(_Public):
    integrations: SectionCounts
    destinations: SectionCounts
    rules: SectionCounts
    dids: SectionCounts
    ivrs: SectionCounts
    agents: SectionCounts | None = None
    schedules: SectionCounts | None = None


class LicensePublic(_Public):
    status: str = Field(description="not_enforced, valid, missing, invalid or expired")
    routing_enabled: bool
    message: str
    licensee: str | None
    features: list[str]
    limits: dict[str, int]
    issued: str | None
    expires: str | None


class UserIn(Strict):
    username: str = Field(min_length=1, max_length=64, json_schema_extra={"pattern": USERNAME_PATTERN.pattern})
    password: str = Field(min_length=1, max_length=1024, json_schema_extra={"minLength": MIN_PASSWORD_LENGTH})


class PasswordIn(Strict):
    password: str = Field(min_length=1, max_length=1024, json_schema_extra={"minLength": MIN_PASSWORD_LENGTH})


class UserPublic(_Public):
    id: int
    username: str
    is_active: bool
    created_at: str


class UserPage(Page):
    items: list[UserPublic]


class TokenIn(Strict):
    name: str = Field("", max_length=128)
    username: str | None = Field(None, max_length=64, description="whose token; default: yours")


class TokenPublic(_Public):
    id: int
    name: str
    username: str
    created_at: str
    last_used_at: str | None
    revoked: bool


class TokenPage(Page):
    items: list[TokenPublic]


class TokenCreated(_Public):
    id: int
    name: str
    username: str
    token: str = Field(description="shown once: only its hash is stored")
