"""The built-in ``http`` app as curl sees it: persistent connections as
RFC 9112 §9.3 has them (HTTP/1.0 only when asked), the Date and Server
fields, and a client that goes away mid-response leaving no traceback."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Iterator

import pytest

from ..netns import Netns, skip_unless_netns
from ..stack import KERNEL_V4, TAP, StackProcess

pytestmark = [pytest.mark.netns, pytest.mark.timeout(120)]

SHARDNET_V4 = "198.18.0.2"
URL = f"http://{SHARDNET_V4}/"
REUSED = "Re-using existing connection"  # curl -v, when a second request rides the first connection


@pytest.fixture
def stack() -> Iterator[tuple[Netns, StackProcess]]:
    skip_unless_netns()
    with (
        Netns("http") as ns,
        StackProcess(ns, "--ipv4", f"{SHARDNET_V4}/24", "--serve", "http:80") as stack,
    ):
        ns.run(f"ip addr add {KERNEL_V4}/24 dev {TAP}")
        yield ns, stack


def curl(ns: Netns, *args: str) -> tuple[str, str]:
    r = ns.run(["curl", "-sS", "-v", "--max-time", "10", *args])
    return r.stdout, r.stderr


@pytest.mark.parametrize(
    ("args", "reused", "connection"),
    [
        ((), True, "keep-alive"),
        (("--http1.0", "-H", "Connection: keep-alive"), True, "keep-alive"),
        (("--http1.0",), False, "close"),
        (("-H", "Connection: close"), False, "close"),
    ],
)
def test_connections_persist_as_the_client_asks(
    stack: tuple[Netns, StackProcess], args: tuple[str, ...], reused: bool, connection: str
) -> None:
    ns, _ = stack
    out, err = curl(ns, *args, URL, URL)
    assert out.count("<h1>shardnet</h1>") == 2
    assert (REUSED in err) is reused, err
    assert f"< Connection: {connection}" in err


def test_responses_carry_date_and_server(stack: tuple[Netns, StackProcess]) -> None:
    ns, _ = stack
    _, err = curl(ns, "-o", "/dev/null", URL + "bytes/10")
    headers = dict(
        line[2:].split(": ", 1)
        for line in err.splitlines()
        if line.startswith("< ") and ": " in line
    )
    assert headers["Server"] == "shardnet"
    sent = email.utils.parsedate_to_datetime(headers["Date"]).timestamp()
    assert abs(sent - time.time()) < 60


def test_a_client_leaving_mid_response_leaves_no_traceback(
    stack: tuple[Netns, StackProcess],
) -> None:
    ns, stack_process = stack
    for _ in range(3):  # 200 MB cut off after a fraction of a second
        ns.run(
            ["curl", "-s", "-o", "/dev/null", "--max-time", "0.3", URL + "bytes/200000000"],
            check=False,
        )
    out, _ = curl(ns, URL)  # still serving
    assert "<h1>shardnet</h1>" in out
    assert stack_process.stop() == 0
    log = stack_process.output()
    assert "Traceback" not in log and "write after close" not in log, log
