"""Routing rules and their rows.

CRUD for the API and UI (``get``/``search``/``create``/``update``/``delete``)
and the by-name ``upsert`` of the rules file share ``apply()``. Writes flush
and bump the config version; the caller commits. A secret sent back as the
mask (``********``) keeps its stored value.
"""

from __future__ import annotations

from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from crmroute.errors import ConfigError, Conflict, NotFound
from crmroute.names import name_key
from crmroute.schemas import RuleIn
from crmroute.store import licenses
from crmroute.store.db import bump_config_version, is_id
from crmroute.store.models import Integration, Rule, RuleRow
from crmroute.store.references import References, check_rule, describe, rule_assignments
from crmroute.store.secrets import MASK, SecretBox

_LOAD = (selectinload(Rule.rows), selectinload(Rule.integration), selectinload(Rule.dids), selectinload(Rule.ivrs))


def get(session: Session, rule_id: int) -> Rule:
    rule = session.scalar(select(Rule).where(Rule.id == rule_id).options(*_LOAD)) if is_id(rule_id) else None
    if rule is None:
        raise NotFound(f"no rule with id {rule_id}")
    return rule


def search(session: Session, *, search: str = "", offset: int = 0, limit: int = 50) -> tuple[int, list[Rule]]:
    """Rules whose name, CRM field or location contains ``search`` (any case), by name."""
    query = select(Rule)
    if search.strip():
        text = search.strip()
        columns = (Rule.name, Rule.crm_field, Rule.location)
        query = query.where(or_(*(c.icontains(text, autoescape=True) for c in columns)))
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(func.lower(Rule.name), Rule.name).offset(offset).limit(limit).options(*_LOAD))
    return total, list(rows)


def create(session: Session, box: SecretBox, data: RuleIn, *, license_key: str = "") -> Rule:
    """A new rule. ``license_key`` (``settings.license_key``) enforces the license's rule limit."""
    _refuse_duplicate(session, data.name)
    problems = check_rule(References.stored(session), data)
    problems += licenses.rule_limit_problems(session, license_key)
    if problems:
        raise ConfigError(problems)
    rule = apply(session, box, Rule(name=data.name), data)
    session.add(rule)
    _flush(session, data.name)
    bump_config_version(session)
    return rule


def update(session: Session, box: SecretBox, rule_id: int, data: RuleIn) -> Rule:
    """Replace the rule with ``data`` (renaming allowed); its DIDs and IVRs keep pointing at it."""
    rule = get(session, rule_id)
    _refuse_duplicate(session, data.name, rule.id)
    problems = check_rule(References.stored(session), data, rule_assignments(session, rule.id))
    if problems:
        raise ConfigError(problems)
    rule.name = data.name
    apply(session, box, rule, data)
    _flush(session, data.name)
    bump_config_version(session)
    return rule


def delete(session: Session, rule_id: int) -> None:
    """Refused (``Conflict``) while a DID or IVR uses the rule."""
    rule = get(session, rule_id)
    used = rule_assignments(session, rule.id)
    if used:
        raise Conflict(f"rule {rule.name!r} is used by {describe(used)}; "
                       f"assign {'it' if len(used) == 1 else 'them'} another rule first")  # fmt: skip
    session.delete(rule)
    session.flush()
    bump_config_version(session)


def upsert(session: Session, box: SecretBox, data: RuleIn, integrations: dict[str, Integration]) -> Rule:
    """Create or update by name, compared ignoring case and spacing (the rules file); references are checked
    by the caller."""
    row = session.scalar(select(Rule).where(Rule.name_key == name_key(data.name)).options(selectinload(Rule.rows)))
    if row is None:
        row = Rule(name=data.name)
        session.add(row)
    row.name = data.name  # the file's spelling wins (names match ignoring case and spacing)
    apply(session, box, row, data, integrations)
    return row


def apply(
    session: Session, box: SecretBox, row: Rule, data: RuleIn, integrations: dict[str, Integration] | None = None
) -> Rule:
    """Set every field of ``row`` from ``data`` (not the name); rows are replaced.

    ``integrations`` maps names to rows (looked up when not given). Secrets
    sent as the mask keep their stored values; fields that do not apply to the
    rule's CRM source or location are cleared.
    """
    stored_headers = {h["name"].lower(): h["value"] for h in box.decrypt_json(row.custom_headers_enc or "", [])}
    custom = data.crm_source == "custom"
    row.crm_field = data.crm_field
    row.location = data.location
    row.greeting = data.greeting if data.location == "ivr" else ""
    row.dtmf_timeout_ms = data.dtmf_timeout_ms
    row.dtmf_max_digits = data.dtmf_max_digits
    row.crm_source = data.crm_source
    if custom:
        row.integration = None
    elif integrations is not None:
        row.integration = integrations[data.integration or ""]
    else:
        with session.no_autoflush:  # ``row`` may be half set
            key = name_key(data.integration or "")
            row.integration = session.scalar(select(Integration).where(Integration.name_key == key))
    row.crm_module = "" if custom else data.crm_module
    row.crm_username = "" if custom else data.crm_username
    stored_password = box.decrypt(row.crm_password_enc or "")
    password = "" if custom else stored_password if data.crm_password == MASK else data.crm_password
    if password != stored_password:
        row.crm_password_enc = box.encrypt(password)
    row.custom_url = data.custom_url if custom else ""
    row.custom_post = data.custom_post if custom else False
    headers = [
        {"name": h.name, "value": stored_headers.get(h.name.lower(), "") if h.value == MASK else h.value}
        for h in data.custom_headers
    ]
    if not custom:
        headers = []
    if headers != box.decrypt_json(row.custom_headers_enc or "", []):
        row.custom_headers_enc = box.encrypt_json(headers)
    row.default_destination = data.default_destination
    row.default_voicemail = data.default_voicemail
    row.deadline_ms = data.deadline_ms
    row.cache_ttl_s = data.cache_ttl_s
    row.keep_company = data.keep_company
    row.moh_class = data.moh_class if data.keep_company == "moh" else "default"
    row.default_agent = data.default_agent
    row.check_availability = data.check_availability
    row.last_agent_days = data.last_agent_days
    row.last_agent_outbound = data.last_agent_outbound
    row.last_agent_min_talk_s = data.last_agent_min_talk_s
    row.rows = [
        RuleRow(position=i, operator=str(r.operator), value=r.value, destination=r.destination, option=r.option,
                conditions=[c.to_data() for c in r.conditions])
        for i, r in enumerate(data.rows, start=1)
    ]
    return row


def _refuse_duplicate(session: Session, name: str, own_id: int | None = None) -> None:
    query = select(Rule.name).where(Rule.name_key == name_key(name), Rule.id != (own_id or 0))
    found = session.scalar(query)
    if found is not None:
        same = "" if found == name else " (names are the same ignoring case and spacing)"
        raise Conflict(f"a rule named {found!r} already exists{same}")


def _flush(session: Session, name: str) -> None:
    try:
        session.flush()
    except IntegrityError:  # created by someone else since we looked
        raise Conflict(f"a rule named {name!r} already exists") from None


def list_all(session: Session) -> list[Rule]:
    query = select(Rule).order_by(Rule.name).options(selectinload(Rule.rows), selectinload(Rule.integration))
    return list(session.scalars(query))


def names(session: Session) -> set[str]:
    return set(session.scalars(select(Rule.name)))


def agent_options(rule: Rule) -> dict:
    """The owner / last_agent settings that differ from their defaults (all of them for the API)."""
    data: dict = {}
    if rule.default_agent:
        data["default_agent"] = rule.default_agent
    if rule.check_availability is False:
        data["check_availability"] = False
    for name, default in (("last_agent_days", 30), ("last_agent_outbound", False), ("last_agent_min_talk_s", 5)):
        value = getattr(rule, name)
        if value is not None and value != default:
            data[name] = value
    return data


def to_public(rule: Rule, box: SecretBox) -> dict:
    """What the API returns: the id, the rules-file fields (secrets masked) and what uses the rule."""
    return {
        "id": rule.id,
        **to_data(rule, box),
        "used_by": {"dids": [d.number for d in rule.dids], "ivrs": [i.number for i in rule.ivrs]},
    }


def to_data(rule: Rule, box: SecretBox) -> dict:
    """The rule as the rules file and API show it: secrets masked, empty parts left out."""
    data: dict = {"name": rule.name, "crm_field": rule.crm_field, "location": rule.location}
    if rule.location == "ivr":
        data |= {"greeting": rule.greeting, "dtmf_timeout_ms": rule.dtmf_timeout_ms,
                 "dtmf_max_digits": rule.dtmf_max_digits}  # fmt: skip
    data["crm_source"] = rule.crm_source
    if rule.crm_source == "custom":
        headers = box.decrypt_json(rule.custom_headers_enc, [])
        data |= {"custom_url": rule.custom_url, "custom_post": rule.custom_post,
                 "custom_headers": [{"name": h["name"], "value": MASK} for h in headers]}  # fmt: skip
    else:
        data |= {"integration": rule.integration.name if rule.integration else None, "crm_module": rule.crm_module}
        if rule.crm_username:
            data["crm_username"] = rule.crm_username
        if rule.crm_password_enc:
            data["crm_password"] = MASK
    data |= {"default_destination": rule.default_destination, "default_voicemail": rule.default_voicemail}
    if rule.deadline_ms is not None:
        data["deadline_ms"] = rule.deadline_ms
    if rule.cache_ttl_s is not None:
        data["cache_ttl_s"] = rule.cache_ttl_s
    if rule.keep_company != "none":
        data["keep_company"] = rule.keep_company
        if rule.keep_company == "moh":
            data["moh_class"] = rule.moh_class
    data |= agent_options(rule)
    data["rows"] = [
        {"operator": r.operator, "value": r.value, "destination": r.destination, "option": r.option}
        | ({"conditions": list(r.conditions)} if r.conditions else {})
        for r in rule.rows
    ]
    return data
