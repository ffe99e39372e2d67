"""Reading a process's memory, CPU and file descriptors from /proc (Linux), no dependencies."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")


def _status(pid: int) -> dict[str, str]:
    values = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            values[name] = value.strip()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return values


def _kb(text: str) -> int:
    return int(text.split()[0]) * 1024 if text else 0


def rss(pid: int) -> int:
    """Resident set size now, bytes (0 if the process is gone)."""
    return _kb(_status(pid).get("VmRSS", ""))


def peak_rss(pid: int) -> int:
    """The highest RSS the process has had (VmHWM), bytes."""
    return _kb(_status(pid).get("VmHWM", ""))


def pss(pid: int) -> int:
    """Proportional set size (shared pages split between their users), bytes; 0 if gone."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return _kb(line.split(":", 1)[1].strip())
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


def open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return 0


def _fd_targets(pid: int) -> list[str]:
    """What each open fd points at (``socket:[inode]``, a file path ...)."""
    targets = []
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                targets.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return []
    return targets


def connections_to(pid: int, port: int) -> int:
    """How many of the process's open sockets are TCP connections to ``port`` (on any address)."""
    inodes = set()
    for name in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{name}").read_text().splitlines()[1:]
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        for line in lines:
            fields = line.split()  # sl local_address rem_address st ... inode at index 9
            if int(fields[2].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    return sum(target in inodes for target in _fd_targets(pid))


def open_files(pid: int, under: str) -> int:
    """How many of the process's open fds are files whose path starts with ``under``."""
    return sum(target.startswith(under) for target in _fd_targets(pid))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time used so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime (fields 14 and 15 of stat)


def children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (children of all its threads, recursively)."""
    found: list[int] = []
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except (FileNotFoundError, ProcessLookupError):
            continue
        for task in tasks:
            try:
                text = Path(f"/proc/{current}/task/{task}/children").read_text()
            except (FileNotFoundError, ProcessLookupError):
                continue
            for child in text.split():
                found.append(int(child))
                todo.append(int(child))
    return found


def tree_pss(pid: int) -> int:
    """PSS of ``pid`` and all its descendants, bytes."""
    return pss(pid) + sum(pss(child) for child in children(pid))
