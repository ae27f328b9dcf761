"""The multi-queue TAP's steering program (``dispatcher/link/steering.py``)
run by the kernel: every TCP, UDP and echo frame the kernel sends into the
TAP lands on the queue of the shard ``classify`` names, from the first frame
of a flow; fragments, ICMP errors, extension headers and ARP land on the
dispatcher's queue. Checked for 1,2 and 3 shards over random frames."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest

from shardnet.dispatcher.link.steering import attach_steering

from ..netns import Netns, skip_unless_netns

pytestmark = [pytest.mark.netns, pytest.mark.timeout(120)]


@pytest.fixture
def ns() -> Iterator[Netns]:
    skip_unless_netns()
    with Netns("steer") as ns:
        yield ns


@pytest.mark.parametrize("nshards", [1, 2, 3])
def test_each_frame_reaches_the_queue_of_its_shard(ns: Netns, nshards: int) -> None:
    code = f"from tests.apps.steering_probe import main; main({nshards}, 600, {nshards})"
    result = json.loads(ns.python(code, timeout=90).stdout)
    assert result["steering"] == "ebpf"
    frames = result["frames"]
    assert all(queue >= 0 for _, queue, _ in frames), "a frame was lost"
    hashed = {"tcp4", "udp4", "echo4", "tcp6", "udp6", "echo6"}
    for kind, queue, shard in frames:
        assert queue == (shard + 1 if kind in hashed else 0), (kind, queue, shard)
    assert {queue for kind, queue, _ in frames if kind in hashed} == set(range(1, nshards + 1))


def test_a_link_that_is_not_a_tap_keeps_the_kernels_steering() -> None:
    fd = os.open("/dev/null", os.O_RDWR)
    try:
        assert attach_steering(fd, 2).startswith("automq: ")
    finally:
        os.close(fd)
