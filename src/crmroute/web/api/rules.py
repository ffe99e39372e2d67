"""/api/v1/rules: routing rules (SPEC 3)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from crmroute.schemas import RuleIn, RulePage, RulePublic
from crmroute.store import rules
from crmroute.web.api._common import CONFLICT, NOT_FOUND, BoxDep, IdPath, PagingDep, Search, SettingsDep
from crmroute.web.deps import SessionDep

router = APIRouter(prefix="/rules", tags=["rules"])


@router.get("", response_model=RulePage, response_model_exclude_unset=True)
def list_rules(session: SessionDep, box: BoxDep, paging: PagingDep, search: Search = "") -> dict:
    """Rules whose name, CRM field or location contains ``search``, by name."""
    total, found = rules.search(session, search=search, offset=paging.offset, limit=paging.limit)
    return paging.page(total, [rules.to_public(r, box) for r in found])


@router.post("", status_code=201, response_model=RulePublic, response_model_exclude_unset=True, responses=CONFLICT)
def create_rule(data: RuleIn, session: SessionDep, box: BoxDep, settings: SettingsDep) -> dict:
    """A new rule; its integration and destinations must exist. Refused beyond the license's rule limit."""
    rule = rules.create(session, box, data, license_key=settings.license_key)
    session.commit()
    return rules.to_public(rule, box)


@router.get("/{rule_id}", response_model=RulePublic, response_model_exclude_unset=True, responses=NOT_FOUND)
def get_rule(rule_id: IdPath, session: SessionDep, box: BoxDep) -> dict:
    return rules.to_public(rules.get(session, rule_id), box)


@router.put("/{rule_id}", response_model=RulePublic, response_model_exclude_unset=True,
            responses=NOT_FOUND | CONFLICT)  # fmt: skip
def update_rule(rule_id: IdPath, data: RuleIn, session: SessionDep, box: BoxDep) -> dict:
    """Replace the rule (renaming allowed). Secrets sent back as ``********`` keep their stored values."""
    rule = rules.update(session, box, rule_id, data)
    session.commit()
    return rules.to_public(rule, box)


@router.delete("/{rule_id}", status_code=204, responses=NOT_FOUND | CONFLICT)
def delete_rule(rule_id: IdPath, session: SessionDep) -> Response:
    """Refused (409) while a DID or IVR uses the rule."""
    rules.delete(session, rule_id)
    session.commit()
    return Response(status_code=204)
