"""``--relay-limits``: NAME=N pairs over the defaults."""

from __future__ import annotations

import pytest

from shardnet.shards.relay.limits import RelayLimits


def test_given_limits_replace_the_defaults() -> None:
    assert RelayLimits.parse(None) == RelayLimits()
    limits = RelayLimits.parse("per_destination=2, udp-flows=10")
    assert (limits.per_destination, limits.udp_flows) == (2, 10)
    assert (limits.in_flight, limits.per_source) == (RelayLimits().in_flight, 1024)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("per_dest=2", "NAME=N"),
        ("in_flight", "NAME=N"),
        ("in_flight=x", "whole number"),
        ("udp_flows=0", "at least 1"),
    ],  # fmt: skip
)
def test_bad_limits_are_one_line_errors(text: str, fragment: str) -> None:
    with pytest.raises(ValueError) as exc:
        RelayLimits.parse(text)
    assert fragment in str(exc.value) and "\n" not in str(exc.value)
