"""Asterisk dial patterns for DIDs."""

from __future__ import annotations

import pytest

from crmroute.routing.patterns import best_match, compile_pattern


@pytest.mark.parametrize(
    ("pattern", "number", "matches"),
    [
        ("_555XXXX", "5551234", True),
        ("_555XXXX", "555123", False),
        ("_555XXXX", "55512345", False),
        ("_NXXNXXXXXX", "2125551234", True),
        ("_NXXNXXXXXX", "1125551234", False),
        ("_Z.", "1", False),
        ("_Z.", "12", True),
        ("_1!", "1", True),
        ("_[13-5]00", "400", True),
        ("_[13-5]00", "200", False),
        ("_+1X.", "+15551234", True),
    ],
)
def test_pattern_matching(pattern, number, matches):
    assert compile_pattern(pattern).matches(number) is matches


def test_most_specific_pattern_wins():
    patterns = [compile_pattern(p) for p in ("_X.", "_555XXXX", "_5551XXX")]
    assert best_match("5551234", patterns).text == "_5551XXX"
    assert best_match("5559234", patterns).text == "_555XXXX"
    assert best_match("12", patterns).text == "_X."
    assert best_match("", patterns) is None


def test_bad_patterns():
    with pytest.raises(ValueError):
        compile_pattern("555")
    with pytest.raises(ValueError):
        compile_pattern("_55[12")
