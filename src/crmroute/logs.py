"""Logging setup: text or JSON lines, each call's lines carrying its unique id (and, with several nodes, the node's)."""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone

from crmroute.settings import Settings


class JsonFormatter(logging.Formatter):
    def __init__(self, node: str = "") -> None:
        super().__init__()
        self.node = node

    def format(self, record: logging.LogRecord) -> str:
        data = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self.node:
            data["node"] = self.node
        call_id = getattr(record, "call_id", None)
        if call_id:
            data["call_id"] = call_id
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self, node: str = "") -> None:
        super().__init__(f"%(asctime)s {node + ' ' if node else ''}%(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        call_id = getattr(record, "call_id", None)
        return f"{text} [call {call_id}]" if call_id else text


def configure(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    node = settings.node if settings.clustered or settings.node_id else ""  # one node alone: its lines as before
    handler.setFormatter(JsonFormatter(node) if settings.log_format == "json" else TextFormatter(node))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    for noisy in ("httpx", "httpcore", "alembic"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
