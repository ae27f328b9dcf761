"""What the network layer decides once per unicast destination and then
reuses for every datagram to it: the NIC, the source address, the next
hop's MAC as a ready Ethernet header, the hop limit, and the address words'
part of the IP header checksum and of the transport pseudo-header sum.

Routing, source selection (RFC 6724 for IPv6) and the neighbour lookup cost
tens of microseconds per datagram in Python; a connection or a UDP peer
sends thousands of datagrams to the same place. A path stays valid only
while every table it was derived from is unchanged (``NetView.version``,
bumped on any change of NICs, addresses, routes or neighbours), so a
route, address or neighbour change is seen by the very next datagram.
Only unicast destinations with a known neighbour are kept: loopback,
broadcast, multicast and destinations still being resolved take the full
path every time.
"""

from __future__ import annotations

from dataclasses import dataclass

from .datagram import ETH_HEADER
from .model import Nic
from .state import NetView

PATH_CACHE_SIZE = 4096  # destinations remembered; more cost a recomputation now and then

# (destination, source asked for, NIC asked for): what the caller pins down.
PathKey = tuple[bytes, bytes | None, int | None]


@dataclass(slots=True)
class Path:
    nic: Nic
    src: bytes
    eth: bytes  # Ethernet header: the next hop's MAC, the NIC's, the ethertype
    hop_limit: int  # IPv6: the RA's CurHopLimit or the default (IPv4: unused)
    # int.from_bytes(src + dst) % 0xFFFF: the addresses' share of the IPv4
    # header checksum and of the pseudo-header sum (RFC 1071: one's-complement
    # sums add as integers modulo 0xFFFF).
    addr_sum: int
    hop: tuple[int, bytes]  # (NIC id, next hop): reported as used (NUD, RFC 4861 §7.3.3)
    # The stack's ``used_epoch`` when ``hop`` was last noted: one identity
    # test per datagram instead of hashing the hop.
    reported: object = None


class PathCache:
    def __init__(self, view: NetView) -> None:
        self.view = view
        self._paths: dict[PathKey, Path] = {}
        self._version = view.version

    def get(self, key: PathKey) -> Path | None:
        if self._version != self.view.version:
            self._paths.clear()
            self._version = self.view.version
            return None
        return self._paths.get(key)

    def remember(
        self, key: PathKey, nic: Nic, src: bytes, dst: bytes, next_hop: bytes,
        ethertype: int, hop_limit: int,
    ) -> None:  # fmt: skip
        """Keep the path just computed for ``key``, if its next hop is a
        known neighbour (one still being resolved takes the full way)."""
        hop = (nic.id, next_hop)
        mac = self.view.next_hop_mac(nic, next_hop)
        if mac is None:
            return
        eth = ETH_HEADER.pack(mac, nic.mac, ethertype)
        addr_sum = int.from_bytes(src + dst, "big") % 0xFFFF
        self._put(key, Path(nic, src, eth, hop_limit, addr_sum, hop))

    def _put(self, key: PathKey, path: Path) -> None:
        paths = self._paths
        if self._version != self.view.version:
            paths.clear()
            self._version = self.view.version
        if len(paths) >= PATH_CACHE_SIZE:
            paths.clear()  # bounded, whatever the number of destinations
        paths[key] = path

    def clear(self) -> None:
        self._paths.clear()

    def __len__(self) -> int:
        return len(self._paths)
