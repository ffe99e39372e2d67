"""The installed license (the newest row of ``licenses``) and the limits it sets."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from crmroute import licensing
from crmroute.errors import ConfigError, LicenseError
from crmroute.store.db import bump_config_version
from crmroute.store.models import License, Rule

Problem = tuple[str, str]


def installed_text(session: Session) -> str | None:
    return session.scalar(select(License.text).order_by(License.id.desc()).limit(1))


def current_state(session: Session, license_key: str, today: date | None = None) -> licensing.LicenseState:
    return licensing.license_state(license_key, installed_text(session), today or date.today())


def install(session: Session, text: str, license_key: str, today: date | None = None) -> licensing.License:
    """Verify ``text`` against the key (shape only when none is configured) and make it the license in force.

    Raises ``LicenseError`` for a malformed, badly signed, expired or not yet issued license, ``ConfigError``
    for a bad key.
    """
    if license_key.strip():
        found = licensing.verify_license(text, licensing.load_public_key(license_key))
    else:
        found = licensing.parse_license(text)
    licensing.check_current(found, today or date.today())
    session.add(License(text=text))
    session.flush()
    bump_config_version(session)
    return found


def rule_limit(session: Session, license_key: str) -> int | None:
    """``limits.rules`` of the installed license; ``None`` when no key is configured or no valid license sets it."""
    if not license_key.strip():
        return None
    text = installed_text(session)
    if not text:
        return None
    try:
        found = licensing.verify_license(text, licensing.load_public_key(license_key))
    except (LicenseError, ConfigError):
        return None
    return found.limit("rules")


def rule_limit_problems(session: Session, license_key: str, fields: Sequence[str] = ("name",)) -> list[Problem]:
    """The one check of the rule limit: creating ``len(fields)`` rules (each blamed by its field) must fit it."""
    limit = rule_limit(session, license_key)
    if limit is None or not fields:
        return []
    stored = session.scalar(select(func.count()).select_from(Rule)) or 0
    left = max(limit - stored, 0)
    message = f"the license allows at most {limit} rules"
    return [(path, message) for path in fields[left:]]


def check_rule_limit(session: Session, license_key: str, fields: Sequence[str] = ("name",)) -> None:
    problems = rule_limit_problems(session, license_key, fields)
    if problems:
        raise ConfigError(problems)
