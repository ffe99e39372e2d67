"""CRM connectors: one module per CRM kind, found by scanning this package."""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache

from crmroute.connectors.base import Connector

NOT_CONNECTORS = frozenset({"base", "pool", "custom"})


@cache
def registry() -> dict[str, type[Connector]]:
    """Every connector class by kind slug; a kind defined twice is a bug."""
    found: dict[str, type[Connector]] = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_") or info.name in NOT_CONNECTORS:
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        for obj in vars(module).values():
            if isinstance(obj, type) and issubclass(obj, Connector) and obj.kind and obj.__module__ == module.__name__:
                if obj.kind in found:
                    raise RuntimeError(f"CRM kind {obj.kind!r} is defined twice: {found[obj.kind]} and {obj}")
                found[obj.kind] = obj
    return dict(sorted(found.items()))
