"""The FastAGI scripts: ``/did``, ``/ivr/N``, ``/rule/NAME`` (and ``/route?did=...``).

A script finds the rule for the call, collects DTMF when the rule has a
greeting, asks the router for a decision and returns the channel variables
and jump target for the server to write. It knows no CRM.
"""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import unquote

from crmroute.agi.jumps import JumpTable
from crmroute.agi.protocol import AgiChannel, AgiEnv
from crmroute.agi.server import Outcome
from crmroute.agi.variables import decision_variables
from crmroute.errors import AgiError, AgiProtocolError
from crmroute.router import Router, Target
from crmroute.routing.trace import Decision, Status
from crmroute.store.decisions import CallMeta

logger = logging.getLogger(__name__)

RINGING, MOH = "ringing", "moh"  # a rule's keep_company, beside "none"
COMPANY_TIMEOUT = 1.0  # seconds for Asterisk to answer each ringing / music-on-hold command


def parse_target(env: AgiEnv) -> Target:
    """What the dialplan asked for, from the script path, its query or ``agi_arg_1``.

    ``did`` (DID from ``?did=``, ``agi_arg_1``, else the channel's extension or
    DNID), ``ivr/N``, ``rule/NAME``; ``route?did=N|ivr=N|rule=NAME`` also works.
    """
    parts = [unquote(p) for p in env.path.split("/") if p]
    query, args = env.query, env.args
    head = parts[0].lower() if parts else ""
    rest = "/".join(parts[1:]).strip()
    first_arg = args[0].strip() if args else ""
    if head == "route":
        for kind in ("did", "ivr", "rule"):
            if query.get(kind, "").strip():
                return Target(kind, query[kind].strip())
        raise AgiProtocolError(f"script {env.script!r}: route needs ?did=, ?ivr= or ?rule=")
    if head == "did":
        return Target("did", rest or query.get("did", "").strip() or first_arg)
    if head in ("ivr", "rule"):
        value = rest or query.get(head, "").strip() or first_arg
        if not value:
            raise AgiProtocolError(f"script {env.script!r}: {head} needs a {'number' if head == 'ivr' else 'name'}")
        return Target(head, value)
    raise AgiProtocolError(f"unknown script {env.script!r}: use /did, /ivr/N or /rule/NAME")


class CallHandler:
    """The server's handler: one instance serves every call."""

    def __init__(self, router: Router, jumps: JumpTable) -> None:
        self.router = router
        self.jumps = jumps

    async def __call__(self, channel: AgiChannel) -> Outcome:
        env = channel.env
        meta = CallMeta(call_id=env.uniqueid, channel=env.channel, caller=env.callerid)
        try:
            decision, meta = await self._decide(channel, meta)
        except AgiError:
            raise  # hang-up or protocol trouble: the server ends the session
        except Exception as exc:
            self.router.record(Decision(Status.ERROR, reason="internal", error=f"{type(exc).__name__}: {exc}"), meta)
            raise
        self.router.record(decision, meta)
        logger.info(
            "call from %s: %s %s -> %s", meta.caller or "unknown", decision.rule or "-", decision.status,
            f"{decision.destination.type} {decision.destination.option}" if decision.destination else "dialplan",
            extra={"call_id": meta.call_id},
        )  # fmt: skip
        return Outcome(decision_variables(decision), self.jumps.jump_for(decision.destination))

    async def _decide(self, channel: AgiChannel, meta: CallMeta) -> tuple[Decision, CallMeta]:
        env = channel.env
        try:
            target = parse_target(env)
        except AgiProtocolError as exc:
            logger.warning("%s", exc, extra={"call_id": meta.call_id})
            return Decision(Status.ERROR, reason="bad_script", error=str(exc)), meta
        await self.router.settled()
        resolved = self.router.resolve(target, extension=env.extension, dnid=env.dnid)
        meta = CallMeta(meta.call_id, meta.channel, meta.caller, did=resolved.did, ivr=resolved.ivr)
        if resolved.refusal is not None or resolved.rule is None:
            return resolved.refusal or Decision(Status.NO_RULE), meta
        rule = resolved.rule
        dtmf = ""
        since = channel.connection.connected_at  # the deadline counts from Asterisk's request ...
        if rule.spec.greeting:
            dtmf = await channel.get_data(rule.spec.greeting, rule.spec.dtmf_timeout_ms, rule.spec.dtmf_max_digits)
            since = None  # ... or, for an IVR rule, from the end of DTMF collection
        company = Company.for_rule(channel, rule.spec.keep_company, rule.spec.moh_class, meta.call_id)
        try:
            decision = await self.router.decide(rule, caller_id=env.callerid, dtmf=dtmf, did=resolved.did,
                                                on_crm=company.start if company else None, since=since,
                                                called=env.dnid)  # fmt: skip
        finally:
            if company is not None:
                await company.stop()
        return decision, meta


class Company:
    """What the caller hears while the CRM is asked: ringing, or music on hold (a rule's ``keep_company``).

    ``start()`` is the router's ``on_crm`` hook: called only when the CRM is
    really asked (not for a cached value), it sends ``EXEC Ringing`` or
    ``EXEC StartMusicOnHold CLASS`` without delaying the CRM request;
    ``stop()`` waits for that command and, for music on hold, sends ``EXEC
    StopMusicOnHold``, before the variables are written. Each command is
    bounded by ``COMPANY_TIMEOUT``; a failure (a dead channel, an unknown
    application) is logged and never changes the decision.
    """

    def __init__(self, channel: AgiChannel, mode: str, moh_class: str, call_id: str) -> None:
        self.channel = channel
        self.mode = mode
        self.moh_class = moh_class or "default"
        self.call_id = call_id
        self._started: asyncio.Task | None = None

    @classmethod
    def for_rule(cls, channel: AgiChannel, mode: str, moh_class: str, call_id: str) -> Company | None:
        return cls(channel, mode, moh_class, call_id) if mode in (RINGING, MOH) else None

    def start(self) -> None:
        if self._started is None:
            if self.mode == RINGING:
                self._started = asyncio.create_task(self._exec("Ringing"))
            else:
                self._started = asyncio.create_task(self._exec("StartMusicOnHold", self.moh_class))

    async def stop(self) -> None:
        if self._started is None:
            return
        started_ok = await self._started
        if self.mode == MOH and started_ok and not self.channel.hung_up:
            await self._exec("StopMusicOnHold")

    async def _exec(self, app: str, *args: str) -> bool:
        try:
            reply = await self.channel.exec(app, *args, timeout=COMPANY_TIMEOUT)
        except (AgiError, ValueError) as exc:
            logger.info("EXEC %s failed: %s", app, exc, extra={"call_id": self.call_id})
            return False
        if reply.result == "-2":
            logger.warning("EXEC %s: no such application in Asterisk", app, extra={"call_id": self.call_id})
            return False
        return True
