"""``shardnet.Client`` against a running stack, each typed method checked by
what the kernel peer then sees: a NIC created with a context carries an
address the kernel pings (and stops pinging when it is disabled or
removed), addresses and routes come and go, NDP settings change, and
``aevents`` delivers the DAD result of an address added meanwhile; the
changes made through it survive a restart of shard 0."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

import shardnet
from shardnet.common.control_api import ControlError

from ..netns import Netns, skip_unless_netns, wait_until
from ..stack import KERNEL_V4, TAP, StackProcess

pytestmark = [pytest.mark.netns, pytest.mark.timeout(120)]

SHARDNET_V4 = "198.18.0.2"
LOOP_NET, LOOP_ADDR = "198.19.5.0/24", "198.19.5.1"  # on a NIC the client creates


@pytest.fixture(scope="module")
def ns() -> Iterator[Netns]:
    skip_unless_netns()
    with Netns("client") as ns:
        yield ns


@pytest.fixture(scope="module")
def stack(ns: Netns) -> Iterator[StackProcess]:
    with StackProcess(ns, "--ipv4", f"{SHARDNET_V4}/24", "--ipv6", "2001:db8::2/64") as stack:
        ns.run(f"ip addr add {KERNEL_V4}/24 dev {TAP}")
        ns.run(f"ip route add {LOOP_NET} via {SHARDNET_V4}")
        yield stack


@pytest.fixture
def client(stack: StackProcess) -> Iterator[shardnet.Client]:
    with shardnet.Client(stack.control) as client:
        yield client


def pings(ns: Netns, addr: str) -> bool:
    return ns.run(f"ping -c 1 -W 1 {addr}", check=False).returncode == 0


def test_a_created_nic_carries_a_reachable_address(ns: Netns, client: shardnet.Client) -> None:
    row = client.nic_create("snlo1", context={"owner": "test", "id": 7})
    assert row["name"] == "snlo1" and row["loopback"]
    assert client.nic("snlo1")["context"] == {"owner": "test", "id": 7}
    client.addr_add("snlo1", f"{LOOP_ADDR}/24")
    assert pings(ns, LOOP_ADDR)
    client.nic_disable("snlo1")
    assert not client.nic("snlo1")["enabled"]
    assert not pings(ns, LOOP_ADDR)
    client.nic_enable("snlo1")
    assert wait_until(lambda: pings(ns, LOOP_ADDR), timeout=5)
    client.nic_remove("snlo1")
    assert "snlo1" not in [n["name"] for n in client.nics()]
    assert not pings(ns, LOOP_ADDR)
    with pytest.raises(ControlError):
        client.nic("snlo1")


def test_addresses_and_routes(ns: Netns, client: shardnet.Client) -> None:
    client.addr_add(TAP, "198.18.0.3/24", behavior="never-primary")
    row = next(a for a in client.addrs() if a["addr"] == "198.18.0.3")
    assert row["behavior"] == "never-primary"
    assert pings(ns, "198.18.0.3")
    client.addr_remove(TAP, "198.18.0.3/24")
    assert not pings(ns, "198.18.0.3")
    client.route_add("198.19.9.0/24", via=KERNEL_V4, metric=5)
    assert any(r["dst"] == "198.19.9.0" and r["gateway"] == KERNEL_V4 for r in client.routes())
    client.route_remove("198.19.9.0/24", via=KERNEL_V4, metric=5)
    assert not any(r["dst"] == "198.19.9.0" for r in client.routes())
    with pytest.raises(ControlError):
        client.addr_add(TAP, "not-an-address/24")


def test_ndp_settings_forwarding_stats_and_groups(client: shardnet.Client) -> None:
    before = client.ndp_get()
    changed = client.ndp_set({"dup_addr_detect_transmits": 3})
    assert changed["dup_addr_detect_transmits"] == 3
    client.ndp_set({"dup_addr_detect_transmits": before["dup_addr_detect_transmits"]})
    assert client.forwarding() is False
    assert client.forwarding(True) is True and client.forwarding(False) is False
    assert len(client.stats()["shards"]) == 2
    assert client.groups() == []


def test_aevents_reports_the_dad_of_a_new_address(stack: StackProcess) -> None:
    async def go() -> dict:
        with shardnet.Client(stack.control) as client:
            events = client.aevents()
            first = asyncio.ensure_future(anext(events))
            await asyncio.sleep(0.3)  # the subscription is made
            client.addr_add(TAP, "2001:db8::77/64")
            while True:
                event = await asyncio.wait_for(first, 10)
                if event.type == "dad_result" and event.data.get("addr") == "2001:db8::77":
                    await events.aclose()
                    return event.data
                first = asyncio.ensure_future(anext(events))

    data = asyncio.run(go())
    assert data["resolved"] is True


def test_run_time_changes_survive_a_restart_of_shard_0(
    ns: Netns, stack: StackProcess, client: shardnet.Client
) -> None:
    """Shard 0 owns the tables; a new one starts from the configuration and
    the dispatcher replays what was changed at run time (in order)."""
    nic = client.nic_create("snlo2", context={"keep": True})
    client.addr_add("snlo2", "198.19.6.1/24")
    client.addr_add(TAP, "198.18.0.4/24")
    client.addr_add(TAP, "198.18.0.5/24")
    client.addr_remove(TAP, "198.18.0.5")  # undone: nothing to replay for it
    client.addr_remove(TAP, "2001:db8::2")  # from the configuration: stays removed
    client.route_add("198.19.9.0/24", via=KERNEL_V4, metric=7)
    client.ndp_set({"dup_addr_detect_transmits": 2})
    ns.run(f"ip route add 198.19.6.0/24 via {SHARDNET_V4}")
    assert pings(ns, "198.19.6.1") and pings(ns, "198.18.0.4")

    assert stack.kill_shard(0, timeout=10)
    assert wait_until(lambda: "snlo2" in [n["name"] for n in client.nics()], timeout=5)
    assert client.nic("snlo2")["id"] == nic["id"]
    assert client.nic("snlo2")["context"] == {"keep": True}
    addrs = {a["addr"] for a in client.addrs()}
    assert {"198.19.6.1", "198.18.0.4"} <= addrs
    assert "198.18.0.5" not in addrs and "2001:db8::2" not in addrs
    assert any(r["dst"] == "198.19.9.0" and r["metric"] == 7 for r in client.routes())
    assert client.ndp_get()["dup_addr_detect_transmits"] == 2
    assert wait_until(lambda: pings(ns, "198.19.6.1") and pings(ns, "198.18.0.4"), timeout=5)
