"""Rules files written to hurt: each with the format it is sent as and what the refusal must say.

Shared by the unit tests of ``crmroute.textfile`` and the CLI and API tests.
"""

from __future__ import annotations

from dataclasses import dataclass

from crmroute.textfile import MAX_BYTES, MAX_VALUES


@dataclass(frozen=True)
class Hostile:
    fmt: str  # "yaml" or "json"
    data: bytes
    field: str  # the path the refusal names
    message: str  # a part of its message


def _laughs() -> bytes:
    """The classic billion laughs: nine aliases deep, 9**9 strings once expanded, in about 350 bytes."""
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    return ("\n".join(lines) + "\n").encode()


HOSTILE = {
    "alias_bomb": Hostile("yaml", _laughs(), "f[0]", f"more than {MAX_VALUES} values (aliases counted in full)"),
    "recursive_alias": Hostile("yaml", b"rules: &r\n  - *r\n", "rules[0]", "alias *r is inside the node it names"),
    "deep_yaml": Hostile("yaml", b"[" * 5000, "file", "nesting depth"),
    "deep_yaml_block": Hostile("yaml", b"".join(b"  " * i + b"a:\n" for i in range(100)),
                               "a." * 31 + "a", "line 33: nested more than 32 levels deep"),  # fmt: skip
    "deep_json": Hostile("json", b"[" * 5000, "[0]" * 32, "line 1: nested more than 32 levels deep"),
    "huge_number_yaml": Hostile("yaml", b"rules:\n  - name: x\n    deadline_ms: " + b"9" * 5000 + b"\n",
                                "rules[0].deadline_ms", "line 3: a number of more than 64 characters"),  # fmt: skip
    "huge_number_json": Hostile("json", b'{"rules": [{"name": "x", "deadline_ms": ' + b"9" * 5000 + b"}]}",
                                "rules[0].deadline_ms", "line 1: a number of more than 64 characters"),  # fmt: skip
    "not_utf8": Hostile("yaml", b"destinations:\n  - {type: queue, number: '1', name: caf\xe9}\n",
                        "file", "not UTF-8 text: byte 0xe9 at offset 54"),  # fmt: skip
    "binary": Hostile("yaml", b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03rules",
                      "file", "not text: a NUL byte at offset 3"),  # fmt: skip
    "duplicate_key_yaml": Hostile("yaml", b"rules:\n  - name: A\n    crm_field: Status\n    name: B\n",
                                  "rules[0].name", "line 4: duplicate key 'name'"),  # fmt: skip
    "duplicate_key_json": Hostile("json", b'{"dids": [{"number": "1", "rule": "A", "number": "2"}]}',
                                  "dids[0].number", "line 1: duplicate key 'number'"),  # fmt: skip
    "duplicate_section": Hostile("yaml", b"rules: []\ndids: []\nrules: []\n", "rules", "line 3: duplicate key 'rules'"),
    "too_large": Hostile("yaml", b"# " + b"x" * MAX_BYTES + b"\n", "file", "larger than 5 MB"),
}
