"""``shardnet bench codecs --quick``: every row is there and positive."""

from __future__ import annotations

import json

import pytest

from shardnet.scripts import bench_codecs

ROWS = [
    "parse eth/ipv4/tcp ts, csum verified",
    "parse eth/ipv4/tcp ts, csum offloaded",
    "parse eth/ipv4/tcp ts, fields() only",
    "build eth/ipv4/tcp ts, csum computed",
    "build eth/ipv4/tcp ts, csum offloaded",
    "parse eth/ipv6/tcp ts+sack, csum verified",
    "parse eth/ipv6/tcp ts+sack, csum offloaded",
    "parse eth/ipv6/tcp ts+sack, fields() only",
    "build eth/ipv6/tcp ts+sack, csum computed",
    "build eth/ipv6/tcp ts+sack, csum offloaded",
    "parse eth/ipv4/udp, csum verified",
    "checksum 1500 B",
    "checksum 65536 B",
]


def test_json_rows(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_codecs.run(["--quick", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["operation"] for r in rows] == ROWS
    assert all(r["ns_per_op"] > 0 and r["number"] >= 1 for r in rows)


def test_table_rows(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_codecs.run(["--quick", "--payload", "0"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["operation", "ns/op"]
    table = {line[: line.rindex("  ")].strip(): line.split()[-1] for line in lines[2:]}
    assert list(table) == ROWS
    assert all(float(v.replace(",", "")) > 0 for v in table.values())


def test_bad_payload_is_a_usage_error() -> None:
    with pytest.raises(SystemExit):
        bench_codecs.run(["--payload", "-1"])
