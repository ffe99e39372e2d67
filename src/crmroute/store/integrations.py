"""CRM integrations: connection settings, encrypted secrets, log options."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from crmroute.schemas import IntegrationIn
from crmroute.store.models import Integration
from crmroute.store.secrets import MASK, SecretBox


def upsert(session: Session, box: SecretBox, data: IntegrationIn) -> Integration:
    """Create or update by name. A secret sent as the mask keeps its stored value."""
    row = session.scalar(select(Integration).where(Integration.name == data.name))
    stored: dict[str, str] = {}
    if row is None:
        row = Integration(name=data.name)
        session.add(row)
    else:
        stored = box.decrypt_json(row.secrets_enc, {})
    secrets = {k: stored.get(k, "") if v == MASK else v for k, v in data.secrets.items()}
    row.kind = data.kind
    row.enabled = data.enabled
    row.settings = dict(data.settings)
    secrets = {k: v for k, v in secrets.items() if v}
    if secrets != stored:
        row.secrets_enc = box.encrypt_json(secrets)
    row.log_options = data.log_options.model_dump()
    return row


def by_name(session: Session) -> dict[str, Integration]:
    return {row.name: row for row in session.scalars(select(Integration))}


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
