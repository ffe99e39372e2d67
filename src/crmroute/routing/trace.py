"""What a routing decision is: its status, destination and trace.

Statuses and destination types are defined here, once; the AGI variables,
the store and the UI use these values.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum


class Status(StrEnum):
    MATCHED = "matched"  # a row matched
    DEFAULT = "default"  # no row matched, no value, or no usable key
    FALLBACK = "fallback"  # the CRM failed or the deadline passed
    NO_RULE = "no_rule"  # nothing assigned to this DID/IVR/name
    UNLICENSED = "unlicensed"
    ERROR = "error"  # a bug or malformed AGI input


class DestType(StrEnum):
    QUEUE = "queue"
    IVR = "ivr"
    RECORDING = "recording"
    EXTENSION = "extension"
    VOICEMAIL = "voicemail"
    OWNER = "owner"  # the found record's owner's agent (its extension)
    LAST_AGENT = "last_agent"  # the agent who last talked with the caller (its extension)


# Types a rule row may send a call to (the seed's Queue / IVR / Play recording, and an agent).
ROW_DEST_TYPES = (DestType.QUEUE, DestType.IVR, DestType.RECORDING, DestType.OWNER, DestType.LAST_AGENT)
# Types naming an agent, chosen per call: the row's option is empty, the decision's is the agent's extension.
AGENT_DEST_TYPES = (DestType.OWNER, DestType.LAST_AGENT)


@dataclass(frozen=True)
class Destination:
    type: DestType
    option: str  # queue number, IVR number, recording name or extension


@dataclass
class Decision:
    """One call's decision and how it was reached (the decision log row)."""

    status: Status
    rule: str = ""
    destination: Destination | None = None
    value: str = ""
    row: int | None = None  # 1-based index of the matching row
    key: str = ""  # what the CRM was asked for
    key_source: str = ""  # "dtmf", "caller_id" or "" when none
    reason: str = ""  # short code: no_caller_id, timeout, http_500, circuit_open ...
    error: str = ""  # text for the admin, no secrets
    record_module: str = ""  # the CRM record found (integrations only), for the call logger
    record_id: str = ""
    crm_ms: float | None = None  # None when the CRM was not asked (no key, cache hit, circuit open)
    total_ms: float = 0.0
    cached: bool = False  # the value came from the value cache, not from the CRM
    agent: str = ""  # owner / last_agent destinations: the chosen agent's name
    steps: list[str] = field(default_factory=list)  # human-readable trace lines

    def as_dict(self) -> dict:
        data = asdict(self)
        data["status"] = str(self.status)
        if self.destination is not None:
            data["destination"] = {"type": str(self.destination.type), "option": self.destination.option}
        return data
