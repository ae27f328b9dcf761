"""``--relay-rule``: parsing, first match wins, default allow."""

from __future__ import annotations

import pytest

from shardnet.common.addr import parse_ip
from shardnet.shards.relay.rules import RelayRule, RelayRules


def test_first_match_wins_and_the_default_is_allow() -> None:
    rules = RelayRules.parse(
        [
            "allow,198.19.5.7/32,25",
            "deny,198.19.5.0/24",
            "deny,0.0.0.0/0,25",
            "deny,2001:db8:19::/48,1-1023",
        ]
    )
    assert rules.allows(parse_ip("198.19.5.7"), 25)  # the allow before the deny
    assert not rules.allows(parse_ip("198.19.5.7"), 80)
    assert not rules.allows(parse_ip("198.19.5.200"), 443)
    assert not rules.allows(parse_ip("198.19.9.9"), 25)
    assert rules.allows(parse_ip("198.19.9.9"), 26)
    assert not rules.allows(parse_ip("2001:db8:19::10"), 1023)
    assert rules.allows(parse_ip("2001:db8:19::10"), 1024)
    assert rules.allows(parse_ip("2001:db8:20::10"), 22)  # no rule matches
    assert RelayRules().allows(parse_ip("198.19.0.1"), 1)


def test_a_rule_matches_its_own_family_only() -> None:
    rule = RelayRule.parse("deny,::/0")
    assert rule.matches(parse_ip("2001:db8::1"), 80)
    assert not rule.matches(parse_ip("198.19.0.1"), 80)


def test_host_bits_of_a_prefix_are_ignored() -> None:
    assert RelayRule.parse("deny,198.19.5.9/24").matches(parse_ip("198.19.5.1"), 1)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("drop,198.19.0.0/16", "want allow|deny"),
        ("deny", "want allow|deny"),
        ("deny,198.19.0.0/33", "bad prefix"),
        ("deny,198.19.0.0/16,http", "bad port"),
        ("deny,198.19.0.0/16,80-22", "bad port range"),
        ("deny,198.19.0.0/16,70000", "bad port range"),
        ("deny,198.19.0.0/16,1,2", "want allow|deny"),
    ],
)
def test_bad_rules_are_one_line_errors(text: str, fragment: str) -> None:
    with pytest.raises(ValueError) as exc:
        RelayRule.parse(text)
    assert fragment in str(exc.value) and "\n" not in str(exc.value)
