"""Where the dialplan continues: ``context,extension,priority`` per destination type.

Two presets (SPEC section 6, ``CRMROUTE_JUMP_PRESET``) and per-type
overrides (``CRMROUTE_JUMP_QUEUE`` ... ``CRMROUTE_JUMP_VOICEMAIL``). Each
part of a template may use ``{dest}``, the destination option (queue
number, IVR number, recording name or extension). ``owner`` and
``last_agent`` destinations jump as extensions (the agent's): the
``extension`` template, unless ``CRMROUTE_JUMP_OWNER`` /
``CRMROUTE_JUMP_LAST_AGENT`` give their own.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING

from crmroute.errors import ConfigError
from crmroute.routing.trace import AGENT_DEST_TYPES, Destination, DestType

if TYPE_CHECKING:
    from crmroute.settings import Settings

Jump = tuple[str, str, str]  # context, extension, priority

PRESETS: Mapping[str, Mapping[DestType, str]] = MappingProxyType(
    {
        "asterisk": MappingProxyType(
            {
                DestType.QUEUE: "crmroute-queue,{dest},1",
                DestType.IVR: "crmroute-ivr,{dest},1",
                DestType.RECORDING: "crmroute-recording,{dest},1",
                DestType.EXTENSION: "crmroute-extension,{dest},1",
                DestType.VOICEMAIL: "crmroute-voicemail,{dest},1",
                DestType.OWNER: "crmroute-extension,{dest},1",  # SPEC 11: agents jump as extensions
                DestType.LAST_AGENT: "crmroute-extension,{dest},1",
            }
        ),
        "freepbx": MappingProxyType(
            {
                DestType.QUEUE: "ext-queues,{dest},1",
                DestType.IVR: "ivr-{dest},s,1",
                DestType.RECORDING: "crmroute-recording,{dest},1",
                DestType.EXTENSION: "from-did-direct,{dest},1",
                DestType.VOICEMAIL: "ext-local,vmu{dest},1",
                DestType.OWNER: "from-did-direct,{dest},1",
                DestType.LAST_AGENT: "from-did-direct,{dest},1",
            }
        ),
    }
)
DEFAULT_PRESET = "asterisk"
JUMP_MODES = ("goto", "variables")


def setting_name(dest_type: DestType | str) -> str:
    """The environment variable overriding one type: ``CRMROUTE_JUMP_QUEUE``."""
    return f"CRMROUTE_JUMP_{str(dest_type).upper()}"


class JumpTable:
    """Jump targets per destination type: a preset with overrides applied.

    ``mode`` is ``CRMROUTE_JUMP_MODE``: with ``variables`` the table still
    answers ``target()`` but ``jump_for()`` returns ``None`` (no jump).
    """

    def __init__(self, preset: str, overrides: Mapping[str, str] | None = None, *, mode: str = "goto") -> None:
        if preset not in PRESETS:
            raise ConfigError(f"must be one of {', '.join(PRESETS)}", field="CRMROUTE_JUMP_PRESET")
        if mode not in JUMP_MODES:
            raise ConfigError(f"must be one of {', '.join(JUMP_MODES)}", field="CRMROUTE_JUMP_MODE")
        self.preset = preset
        self.mode = mode
        templates: dict[DestType, tuple[str, str, str]] = {
            t: _split(template, setting_name(t)) for t, template in PRESETS[preset].items()
        }
        problems: list[tuple[str, str]] = []
        for name, template in (overrides or {}).items():
            try:
                dest_type = DestType(str(name).lower())
            except ValueError:
                problems.append(
                    (setting_name(name), f"unknown destination type; use one of {', '.join(t.value for t in DestType)}")
                )
                continue
            try:
                templates[dest_type] = _split(template, setting_name(dest_type))
            except ConfigError as exc:
                problems.extend(exc.problems)
        if problems:
            raise ConfigError(problems)
        given = {str(name).lower() for name in overrides or {}}
        for agent_type in AGENT_DEST_TYPES:  # an agent is rung as its extension: follow that override
            if DestType.EXTENSION.value in given and agent_type.value not in given:
                templates[agent_type] = templates[DestType.EXTENSION]
        self._templates = templates

    @classmethod
    def from_settings(cls, settings: Settings) -> JumpTable:
        return cls(settings.jump_preset, settings.jump_overrides, mode=settings.jump_mode)

    @property
    def enabled(self) -> bool:
        """False in ``variables`` mode: the dialplan reads the variables and jumps itself."""
        return self.mode == "goto"

    def template(self, dest_type: DestType | str) -> str:
        """The template in force for a type, as ``context,extension,priority``."""
        return ",".join(self._templates[DestType(dest_type)])

    def target(self, destination: Destination) -> Jump:
        """``(context, extension, priority)`` for ``destination``, ``{dest}`` filled in."""
        if not destination.option:
            raise ValueError(f"{destination.type} destination has no option")
        parts = tuple(part.format(dest=destination.option) for part in self._templates[DestType(destination.type)])
        return parts  # type: ignore[return-value]

    def jump_for(self, destination: Destination | None) -> Jump | None:
        """``target(destination)``, or ``None`` with no destination or in ``variables`` mode."""
        if destination is None or not self.enabled:
            return None
        return self.target(destination)

    def __repr__(self) -> str:
        return f"JumpTable(preset={self.preset!r}, mode={self.mode!r})"


def _split(template: str, field: str) -> tuple[str, str, str]:
    """Check a template and split it into its three parts."""
    parts = [part.strip() for part in str(template).split(",")]
    if len(parts) != 3 or not all(parts):
        raise ConfigError("must be context,extension,priority with no empty part", field=field)
    for part in parts:
        try:
            names = {name for _, name, _, _ in string.Formatter().parse(part) if name is not None}
        except ValueError as exc:
            raise ConfigError(f"bad braces in {part!r}: {exc}", field=field) from None
        if names - {"dest"}:
            raise ConfigError(f"only {{dest}} may be used, found {', '.join(sorted(names - {'dest'}))}", field=field)
        if any(ch.isspace() for ch in part.replace("{dest}", "")):
            raise ConfigError(f"{part!r} must not contain spaces", field=field)
    return parts[0], parts[1], parts[2]
