"""Reading YAML and JSON within bounds: every hostile file refused by path, quickly, nothing expanded."""

from __future__ import annotations

import json
import os
import time

import pytest

from crmroute import textfile
from crmroute.errors import ConfigError
from tests.hostile_files import HOSTILE


def load(fmt: str, data: bytes):
    text = textfile.decode(data)
    return textfile.load_json(text) if fmt == "json" else textfile.load_yaml(text)


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_file_is_refused_by_path(name):
    hostile = HOSTILE[name]
    started = time.perf_counter()
    with pytest.raises(ConfigError) as caught:
        load(hostile.fmt, hostile.data)
    assert time.perf_counter() - started < 5  # each takes milliseconds; only a runaway takes seconds
    [(field, message)] = caught.value.problems
    assert field == hostile.field
    assert hostile.message in message


def test_aliases_and_merge_keys_within_bounds_are_fine():
    text = "base: &base {crm_field: Status, location: did}\nrules:\n  - {<<: *base, name: A}\n"
    text += "  - {<<: *base, name: B}\n"
    assert textfile.load_yaml(text)["rules"] == [
        {"crm_field": "Status", "location": "did", "name": "A"},
        {"crm_field": "Status", "location": "did", "name": "B"},
    ]
    assert textfile.load_yaml("a: &x [1, 2]\nb: *x\n") == {"a": [1, 2], "b": [1, 2]}


def test_aliases_count_in_full():
    nine = ", ".join(["*a"] * 9)
    small = f"a: &a {list(range(100))}\nb: [{nine}]\n"  # 100 + 9 * 100 values: fine
    assert len(textfile.load_yaml(small)["b"]) == 9
    big = f"a: &a {list(range(12_000))}\nb: [{nine}]\n"  # each *a is 12,001 values: the 8th passes 100,000
    with pytest.raises(ConfigError) as caught:
        textfile.load_yaml(big)
    assert caught.value.problems == [("b[7]", "line 2: more than 100000 values (aliases counted in full)")]


def test_an_alias_cannot_nest_deeper_than_the_limit():
    nested = "[" * 20 + "]" * 20
    with pytest.raises(ConfigError) as caught:
        textfile.load_yaml(f"a: &a {nested}\nb: {'[' * 20}*a{']' * 20}\n")
    assert "alias *a nests more than 32 levels deep" in caught.value.problems[0][1]
    assert textfile.load_yaml(f"a: &a {nested}\nb: [*a]\n")["b"]


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_limits_are_inclusive(fmt):
    deepest = "[" * textfile.MAX_DEPTH + "]" * textfile.MAX_DEPTH
    longest = "9" * textfile.MAX_NUMBER_CHARS
    load(fmt, deepest.encode())
    assert load(fmt, f'{{"n": {longest}}}'.encode()) == {"n": int(longest)}
    flat = json.dumps(list(range(textfile.MAX_VALUES - 1)))  # the list itself is one value
    assert len(load(fmt, flat.encode())) == textfile.MAX_VALUES - 1
    with pytest.raises(ConfigError, match="more than 100000 values"):
        load(fmt, json.dumps(list(range(textfile.MAX_VALUES))).encode())


def test_strings_that_look_like_json_syntax_are_only_strings():
    text = '{"a": "[[[[{{{{ \\" ,:", "b\\"": 1, "n": "' + "9" * 100 + '"}'
    assert textfile.load_json(text) == {"a": '[[[[{{{{ " ,:', 'b"': 1, "n": "9" * 100}
    assert textfile.load_yaml("n: '" + "9" * 100 + "'\n") == {"n": "9" * 100}


def test_json_without_nan_and_with_its_own_errors():
    with pytest.raises(ConfigError, match="NaN is not a JSON value"):
        textfile.load_json('{"a": NaN}')
    with pytest.raises(ConfigError) as caught:
        textfile.load_json('{"a": [1,}')
    assert caught.value.problems == [("file", "not valid JSON: Expecting value at line 1, column 10")]


def test_impossible_yaml_date_is_an_error_not_a_crash():
    with pytest.raises(ConfigError, match="month must be in 1..12"):
        textfile.load_yaml("holiday: 2024-13-01\n")


def test_decode_drops_a_bom_and_counts_bytes():
    assert textfile.decode("\ufeffrules: []".encode()) == "rules: []"
    assert textfile.decode(b"x" * 10, limit=10) == "x" * 10
    with pytest.raises(ConfigError, match="larger than 64 KB"):
        textfile.decode(b"x" * (64 * 1024 + 1), limit=64 * 1024)


def test_read_says_why_a_file_cannot_be_read(tmp_path):
    plain = tmp_path / "rules.yaml"
    plain.write_text("rules: []\n")
    assert textfile.read(plain) == "rules: []\n"
    for path, reason in ((tmp_path / "missing.yaml", "No such file or directory"), (tmp_path, "Is a directory"),
                         (plain / "x", "Not a directory")):  # fmt: skip
        with pytest.raises(ConfigError) as caught:
            textfile.read(path)
        assert caught.value.problems == [("file", f"cannot read {path}: {reason}")]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_read_says_when_permission_is_denied(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text("rules: []\n")
    path.chmod(0)
    with pytest.raises(ConfigError, match="Permission denied"):
        textfile.read(path)


def test_an_unknown_tag_is_refused_where_it_is():
    with pytest.raises(ConfigError) as caught:
        textfile.load_yaml("rules:\n  - name: !!python/object:os.system x\n")
    assert caught.value.problems == [("rules[0].name", "line 2: unknown tag tag:yaml.org,2002:python/object:os.system")]
