"""Routing rules and their rows."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from crmroute.schemas import RuleIn
from crmroute.store.models import Integration, Rule, RuleRow
from crmroute.store.secrets import MASK, SecretBox


def upsert(session: Session, box: SecretBox, data: RuleIn, integrations: dict[str, Integration]) -> Rule:
    """Create or update by name; rows are replaced. Masked secrets keep their stored values."""
    row = session.scalar(select(Rule).where(Rule.name == data.name).options(selectinload(Rule.rows)))
    if row is None:
        row = Rule(name=data.name)
        session.add(row)
    stored_headers = {h["name"].lower(): h["value"] for h in box.decrypt_json(row.custom_headers_enc or "", [])}
    custom = data.crm_source == "custom"
    row.crm_field = data.crm_field
    row.location = data.location
    row.greeting = data.greeting if data.location == "ivr" else ""
    row.dtmf_timeout_ms = data.dtmf_timeout_ms
    row.dtmf_max_digits = data.dtmf_max_digits
    row.crm_source = data.crm_source
    row.integration = None if custom else integrations[data.integration or ""]
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
    row.rows = [
        RuleRow(position=i, operator=str(r.operator), value=r.value, destination=r.destination, option=r.option)
        for i, r in enumerate(data.rows, start=1)
    ]
    return row


def list_all(session: Session) -> list[Rule]:
    query = select(Rule).order_by(Rule.name).options(selectinload(Rule.rows), selectinload(Rule.integration))
    return list(session.scalars(query))


def names(session: Session) -> set[str]:
    return set(session.scalars(select(Rule.name)))


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
    data["rows"] = [
        {"operator": r.operator, "value": r.value, "destination": r.destination, "option": r.option}
        for r in rule.rows
    ]
    return data
