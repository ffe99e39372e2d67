"""Helpers for call log tests: integrations and routing decisions in a store, calls from the recorded streams."""

from __future__ import annotations

from typing import Any

from crmroute.calllog.calls import Call, CallConfig, CallTracker
from crmroute.schemas import IntegrationIn
from crmroute.store import integrations
from crmroute.store.db import transaction
from crmroute.store.models import DecisionRecord, Rule
from tests.calllog.fakeami import recorded_messages

ANSWERED_ID, MISSED_ID, OUTBOUND_ID = "asttest-1795657672.0", "asttest-1795657686.4", "asttest-1795657696.8"
EVERYTHING = {"inbound_answered": True, "inbound_missed": True, "outbound": True}


def recorded_calls(*names: str) -> list[Call]:
    """The calls of recorded streams (all three by default), as the tracker reports them."""
    tracker = CallTracker(CallConfig(grace=0))
    calls: list[Call] = []
    for name in names or ("inbound-answered", "inbound-missed", "outbound"):
        for message in recorded_messages(name):
            calls += tracker.feed(message, message.received)
    return calls


def add_integration(store: Any, name: str, kind: str = "zoho", *, settings: dict | None = None,
                    secrets: dict | None = None, enabled: bool = True, **log_options: Any) -> int:  # fmt: skip
    data = {"name": name, "kind": kind, "enabled": enabled,
            "settings": settings or {"accounts_url": "https://accounts.zoho.eu", "client_id": "1000.X"},
            "secrets": secrets or {"client_secret": "zs", "refresh_token": "zr"}, "log_options": log_options}  # fmt: skip
    with transaction(store.factory) as session:
        return integrations.create(session, store.box, IntegrationIn.model_validate(data)).id


def add_decision(store: Any, call_id: str, *, rule: str = "VIP", integration_id: int | None = None,
                 record_module: str = "", record_id: str = "", dest: str = "103") -> None:  # fmt: skip
    """A routing decision as the AGI server logs it, and the rule it names (using ``integration_id``)."""
    with transaction(store.factory) as session:
        if integration_id is not None and session.query(Rule).filter_by(name=rule).first() is None:
            session.add(Rule(name=rule, crm_field="Customer_Tier", location="did", crm_source="integration",
                             integration_id=integration_id, crm_module="contacts", default_destination="100"))  # fmt: skip
        session.add(DecisionRecord(call_id=call_id, caller="+15551230001", did="5551000", rule=rule,
                                   lookup_key="+15551230001", key_source="caller_id", value="GOLD", status="matched",
                                   dest_type="queue", dest=dest, record_module=record_module, record_id=record_id))  # fmt: skip
