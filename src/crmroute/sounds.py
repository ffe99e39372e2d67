"""The sound files Asterisk can play, listed from its sounds directory (``CRMROUTE_SOUNDS_DIR``).

A sound is named as ``Playback()`` takes it: its path under the language
directory without the extension (``custom/welcome``, ``digits/1``); the same
sound in several formats is listed once. Unreadable or missing directories
give an empty list (the greeting can still be typed).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from crmroute.schemas import SOUND_PATTERN

logger = logging.getLogger(__name__)

FORMATS = frozenset({"wav", "wav16", "gsm", "ulaw", "alaw", "sln", "sln16", "sln48", "g722", "g729", "g723",
                     "mp3", "ogg", "siren7", "siren14", "ilbc", "h263", "h264"})  # fmt: skip
MAX_SOUNDS = 5000  # a full sounds package has ~1000 per format; more is not a list a person reads


def list_sounds(directory: Path, limit: int = MAX_SOUNDS) -> list[str]:
    """Sorted sound names under ``directory`` (at most ``limit``)."""
    names: set[str] = set()
    try:
        for root, dirs, files in os.walk(directory, onerror=None, followlinks=False):
            dirs.sort()
            relative = Path(root).relative_to(directory)
            for file in files:
                stem, dot, ext = file.rpartition(".")
                if not dot or ext.lower() not in FORMATS:
                    continue
                name = (relative / stem).as_posix().removeprefix("./")
                if SOUND_PATTERN.match(name):
                    names.add(name)
            if len(names) >= limit:
                break
    except OSError as exc:
        logger.warning("sounds directory %s: %s", directory, exc)
    return sorted(names)[:limit]
