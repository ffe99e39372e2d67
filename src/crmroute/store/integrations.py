"""CRM integrations: connection settings, encrypted secrets, log options.

Secrets are write-only: shown as the mask, and a secret sent back as the
mask keeps its stored value. An integration a rule uses cannot be deleted.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from crmroute.connectors import registry
from crmroute.connectors.base import setting_specs
from crmroute.errors import ConfigError, Conflict, NotFound
from crmroute.names import name_key
from crmroute.schemas import IntegrationIn, problems
from crmroute.store.db import bump_config_version, is_id
from crmroute.store.models import Integration
from crmroute.store.references import describe_rules, rules_using_integration
from crmroute.store.secrets import MASK, SecretBox


def get(session: Session, integration_id: int) -> Integration:
    query = select(Integration).where(Integration.id == integration_id).options(selectinload(Integration.rules))
    row = session.scalar(query) if is_id(integration_id) else None
    if row is None:
        raise NotFound(f"no integration with id {integration_id}")
    return row


def search(session: Session, *, search: str = "", offset: int = 0, limit: int = 50) -> tuple[int, list[Integration]]:
    """Integrations whose name or kind contains ``search`` (any case), by name."""
    query = select(Integration)
    if search.strip():
        text = search.strip()
        query = query.where(or_(Integration.name.icontains(text, autoescape=True),
                                Integration.kind.icontains(text, autoescape=True)))  # fmt: skip
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    query = query.order_by(func.lower(Integration.name), Integration.name).offset(offset).limit(limit)
    return total, list(session.scalars(query.options(selectinload(Integration.rules))))


def create(session: Session, box: SecretBox, data: IntegrationIn) -> Integration:
    _refuse_duplicate(session, data.name)
    row = Integration(name=data.name)
    session.add(row)
    apply(box, row, data)
    _flush(session, data.name)
    bump_config_version(session)
    return row


def update(session: Session, box: SecretBox, integration_id: int, data: IntegrationIn) -> Integration:
    """Replace the integration with ``data`` (renaming allowed; rules keep using it)."""
    row = get(session, integration_id)
    _refuse_duplicate(session, data.name, row.id)
    row.name = data.name
    apply(box, row, data)
    _flush(session, data.name)
    bump_config_version(session)
    return row


def delete(session: Session, integration_id: int) -> None:
    """Refused (``Conflict``) while a rule uses the integration."""
    row = get(session, integration_id)
    used = rules_using_integration(session, row.id)
    if used:
        raise Conflict(f"integration {row.name!r} is used by {describe_rules(used)}; "
                       f"give {'it' if len(used) == 1 else 'them'} another CRM first")  # fmt: skip
    session.delete(row)
    session.flush()
    bump_config_version(session)


def upsert(session: Session, box: SecretBox, data: IntegrationIn) -> Integration:
    """Create or update by name, compared ignoring case and spacing (the rules file)."""
    row = session.scalar(select(Integration).where(Integration.name_key == name_key(data.name)))
    if row is None:
        row = Integration(name=data.name)
        session.add(row)
    row.name = data.name  # the file's spelling wins (names match ignoring case and spacing)
    apply(box, row, data)
    return row


def apply(box: SecretBox, row: Integration, data: IntegrationIn) -> Integration:
    """Set every field but the name. A secret sent as the mask keeps its stored value; one left out is dropped.

    ``ConfigError`` when the settings do not suit the kind's connector (paths ``settings.X`` / ``secrets.X``).
    """
    stored: dict[str, str] = box.decrypt_json(row.secrets_enc or "", {})
    secrets = {k: stored.get(k, "") if v == MASK else v for k, v in data.secrets.items()}
    found = connector_problems(data.kind, data.settings, secrets)
    if found:
        raise ConfigError(found)
    row.kind = data.kind
    row.enabled = data.enabled
    row.settings = dict(data.settings)
    secrets = {k: v for k, v in secrets.items() if v}
    if secrets != stored:
        row.secrets_enc = box.encrypt_json(secrets)
    row.log_options = data.log_options.model_dump()
    return row


def connector_problems(kind: str, settings: dict[str, Any], secrets: dict[str, str]) -> list[tuple[str, str]]:
    """What the kind's connector finds wrong with these settings (nothing for a kind without one yet)."""
    cls = registry().get(kind)
    if cls is None:
        return []
    secret_names = {spec.name for spec in setting_specs(cls.Settings) if spec.secret}
    found = [(f"settings.{k}", "a secret: put it under secrets, where it is stored encrypted")
             for k in settings if k in secret_names]  # fmt: skip
    found += [(f"secrets.{k}", "not a secret: put it under settings") for k in secrets
              if k not in secret_names and k in cls.Settings.model_fields]  # fmt: skip
    if found:
        return found
    try:
        cls.Settings.model_validate({**settings, **{k: v for k, v in secrets.items() if v}})
    except ValidationError as exc:
        for path, message in problems(exc):
            head = path.split(".", 1)[0].split("[", 1)[0]
            section = "secrets" if head in secret_names or (head not in cls.Settings.model_fields and head in secrets) else "settings"
            found.append((f"{section}.{path}" if path else section, message))
    return found


def _refuse_duplicate(session: Session, name: str, own_id: int | None = None) -> None:
    query = select(Integration.name).where(Integration.name_key == name_key(name), Integration.id != (own_id or 0))
    found = session.scalar(query)
    if found is not None:
        same = "" if found == name else " (names are the same ignoring case and spacing)"
        raise Conflict(f"an integration named {found!r} already exists{same}")


def _flush(session: Session, name: str) -> None:
    try:
        session.flush()
    except IntegrityError:
        raise Conflict(f"an integration named {name!r} already exists") from None


def by_name(session: Session) -> dict[str, Integration]:
    return {row.name: row for row in session.scalars(select(Integration))}


def to_public(row: Integration, box: SecretBox) -> dict:
    """What the API returns: the id, the rules-file fields (secrets masked) and the rules using it."""
    return {"id": row.id, **to_data(row, box), "used_by": {"rules": [r.name for r in row.rules]}}


def to_data(row: Integration, box: SecretBox) -> dict:
    """The integration as the rules file and API show it: secrets masked."""
    secrets = box.decrypt_json(row.secrets_enc, {})
    return {
        "name": row.name,
        "kind": row.kind,
        "enabled": row.enabled,
        "settings": dict(row.settings),
        "secrets": {key: MASK for key in sorted(secrets)},
        "log_options": dict(row.log_options),
    }


def list_all(session: Session) -> list[Integration]:
    return list(session.scalars(select(Integration).order_by(Integration.name)))
