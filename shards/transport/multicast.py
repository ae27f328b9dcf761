"""The multicast groups one shard's sockets joined (IP_ADD_MEMBERSHIP,
IPV6_JOIN_GROUP), counted per (NIC, group).

Shard 0 speaks IGMP/MLD for the host: this shard tells it when its first
socket joins a (NIC, group) and when its last one leaves, through
``announce`` (a direct call in shard 0, a ``Membership`` message from the
others). ``announce_all`` repeats every join after shard 0 restarted (its
state is rebuilt from the configuration, the groups from the shards).
"""

from __future__ import annotations

import errno
from collections.abc import Callable

# Linux's net.ipv4.igmp_max_memberships (the same limit is used for IPv6 here).
MAX_MEMBERSHIPS_PER_SOCKET = 20

Announce = Callable[[int, bytes, bool], None]


def _nowhere(nic: int, group: bytes, join: bool) -> None:
    """A stack without a control plane (unit tests of the transport)."""


class ShardGroups:
    def __init__(self, announce: Announce = _nowhere) -> None:
        self.announce = announce
        self.users: dict[tuple[int, bytes], int] = {}

    def join(self, nic: int, group: bytes) -> None:
        """One more socket in ``group`` on ``nic``; the first is announced
        (which may raise OSError, and then nothing is counted)."""
        key = (nic, group)
        n = self.users.get(key, 0)
        if n == 0:
            self.announce(nic, group, True)
        self.users[key] = n + 1

    def leave(self, nic: int, group: bytes) -> None:
        key = (nic, group)
        n = self.users.get(key, 0)
        if n <= 0:
            raise OSError(errno.EADDRNOTAVAIL, "not a member of that group")
        if n == 1:
            del self.users[key]
            self.announce(nic, group, False)
        else:
            self.users[key] = n - 1

    def announce_all(self) -> None:
        for nic, group in self.users:
            self.announce(nic, group, True)
