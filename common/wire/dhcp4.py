"""DHCPv4 messages (RFC 2131 §2) and the options a client uses (RFC 2132).

``Dhcp4View.checked`` validates a message from the wire; ``Dhcp4Message``
is its parsed form and builds the client's own messages (``to_bytes``).

The options kept (RFC 2132): subnet mask (1), router (3), domain name
servers (6), domain name (15), requested IP address (50), lease time (51),
message type (53), server identifier (54), parameter request list (55),
message (56), renewal time T1 (58), rebinding time T2 (59), client
identifier (61). Others are skipped whole. An option repeated is
concatenated first (RFC 3396 §5: long options split over several
instances). Left out: option overload (52) into ``sname``/``file`` (the
client asks for no option that long), and relay agents (``giaddr`` is
carried, never acted on).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from .errors import Drop, MalformedPacket

BOOTREQUEST = 1
BOOTREPLY = 2
HTYPE_ETHERNET = 1  # RFC 1700 hardware type
SERVER_PORT = 67
CLIENT_PORT = 68
MAGIC_COOKIE = b"\x63\x82\x53\x63"  # RFC 2131 §3: 99.130.83.99
FLAG_BROADCAST = 0x8000  # RFC 2131 §2: answer to the limited broadcast address
FIXED_LEN = 236  # op .. file (RFC 2131 §2, Figure 1)
MIN_LEN = FIXED_LEN + 4  # with the magic cookie
# RFC 2131 §2: a client must accept 576-byte messages (the IP datagram);
# ours are padded to the BOOTP minimum of 300 bytes (RFC 1542 §2.1).
BOOTP_MIN_LEN = 300

# RFC 2132 §9.6 message types
DISCOVER, OFFER, REQUEST, DECLINE, ACK, NAK, RELEASE, INFORM = range(1, 9)

OPT_PAD = 0
OPT_SUBNET_MASK = 1
OPT_ROUTER = 3
OPT_DNS = 6
OPT_DOMAIN_NAME = 15
OPT_REQUESTED_IP = 50
OPT_LEASE_TIME = 51
OPT_MESSAGE_TYPE = 53
OPT_SERVER_ID = 54
OPT_PARAMS = 55
OPT_MESSAGE = 56
OPT_RENEWAL_TIME = 58
OPT_REBINDING_TIME = 59
OPT_CLIENT_ID = 61
OPT_END = 255

_FIXED = struct.Struct("!BBBBIHH4s4s4s4s16s")  # op .. chaddr; sname and file follow
_U32 = struct.Struct("!I")
# Options whose body is one IPv4 address, one 32-bit number, or a list of
# addresses: a body of another length is malformed (RFC 2132 §3.3, §3.5, §3.8, §9.2).
_ONE_ADDRESS = frozenset((OPT_SUBNET_MASK, OPT_REQUESTED_IP, OPT_SERVER_ID))
_ONE_U32 = frozenset((OPT_LEASE_TIME, OPT_RENEWAL_TIME, OPT_REBINDING_TIME))
_ADDRESS_LIST = frozenset((OPT_ROUTER, OPT_DNS))


def _bad(detail: str) -> MalformedPacket:
    return MalformedPacket(Drop.DHCP_BAD_OPTION, detail, layer="dhcp")


@dataclass(slots=True)
class Dhcp4Message:
    """One DHCP message: the RFC 2131 §2 fields the client uses and the
    RFC 2132 options above (None or empty: absent)."""

    op: int
    xid: int
    chaddr: bytes  # the 6-byte Ethernet address (hlen 6)
    message_type: int
    secs: int = 0
    flags: int = 0
    ciaddr: bytes = bytes(4)
    yiaddr: bytes = bytes(4)
    siaddr: bytes = bytes(4)
    giaddr: bytes = bytes(4)
    subnet_mask: bytes | None = None
    routers: list[bytes] = field(default_factory=list)
    dns_servers: list[bytes] = field(default_factory=list)
    domain_name: str | None = None
    requested_ip: bytes | None = None
    lease_time_s: int | None = None
    server_id: bytes | None = None
    params: bytes = b""  # parameter request list: option codes
    message: str | None = None
    renewal_time_s: int | None = None
    rebinding_time_s: int | None = None
    client_id: bytes | None = None

    @classmethod
    def parse(cls, buf: bytes | bytearray | memoryview) -> Dhcp4Message:
        return Dhcp4View.checked(memoryview(bytes(buf))).message()

    def to_bytes(self) -> bytes:
        """The message, options in code order, padded to the BOOTP minimum."""
        out = bytearray(FIXED_LEN)
        _FIXED.pack_into(
            out, 0, self.op, HTYPE_ETHERNET, 6, 0, self.xid, self.secs, self.flags,
            self.ciaddr, self.yiaddr, self.siaddr, self.giaddr, self.chaddr.ljust(16, b"\0"),
        )  # fmt: skip
        out += MAGIC_COOKIE

        def put(code: int, body: bytes) -> None:
            # RFC 3396 §5: a body over 255 bytes goes in several instances.
            for i in range(0, max(len(body), 1), 255):
                chunk = body[i : i + 255]
                out.extend((code, len(chunk)))
                out.extend(chunk)

        put(OPT_MESSAGE_TYPE, bytes((self.message_type,)))
        if self.subnet_mask is not None:
            put(OPT_SUBNET_MASK, self.subnet_mask)
        if self.routers:
            put(OPT_ROUTER, b"".join(self.routers))
        if self.dns_servers:
            put(OPT_DNS, b"".join(self.dns_servers))
        if self.domain_name is not None:
            put(OPT_DOMAIN_NAME, self.domain_name.encode("ascii"))
        for code, value in (
            (OPT_REQUESTED_IP, self.requested_ip),
            (OPT_SERVER_ID, self.server_id),
            (OPT_CLIENT_ID, self.client_id),
        ):
            if value is not None:
                put(code, value)
        for code, number in (
            (OPT_LEASE_TIME, self.lease_time_s),
            (OPT_RENEWAL_TIME, self.renewal_time_s),
            (OPT_REBINDING_TIME, self.rebinding_time_s),
        ):
            if number is not None:
                put(code, _U32.pack(number))
        if self.params:
            put(OPT_PARAMS, self.params)
        if self.message is not None:
            put(OPT_MESSAGE, self.message.encode("ascii"))
        out.append(OPT_END)
        if len(out) < BOOTP_MIN_LEN:
            out += bytes(BOOTP_MIN_LEN - len(out))
        return bytes(out)


class Dhcp4View:
    """A DHCP message on the wire (the UDP payload)."""

    __slots__ = ("buf", "options")

    def __init__(self, buf: memoryview, options: dict[int, bytes]) -> None:
        self.buf = buf
        self.options = options  # code -> body (instances concatenated)

    @classmethod
    def checked(cls, buf: memoryview) -> Dhcp4View:
        """Fixed header, cookie and every option's bounds and length."""
        if len(buf) < MIN_LEN:
            raise MalformedPacket(Drop.DHCP_TRUNCATED, f"{len(buf)} bytes", layer="dhcp")
        if bytes(buf[FIXED_LEN:MIN_LEN]) != MAGIC_COOKIE:
            raise MalformedPacket(Drop.DHCP_BAD_COOKIE, layer="dhcp")
        options: dict[int, bytes] = {}
        i, n = MIN_LEN, len(buf)
        while i < n:
            code = buf[i]
            if code == OPT_END:
                break
            if code == OPT_PAD:
                i += 1
                continue
            if i + 2 > n or i + 2 + buf[i + 1] > n:
                raise _bad(f"option {code} past the end")
            body = bytes(buf[i + 2 : i + 2 + buf[i + 1]])
            options[code] = options.get(code, b"") + body
            i += 2 + len(body)
        for code, body in options.items():
            if (
                (code in _ONE_ADDRESS or code in _ONE_U32)
                and len(body) != 4
                or code in _ADDRESS_LIST
                and (not body or len(body) % 4)
                or code == OPT_MESSAGE_TYPE
                and len(body) != 1
                or code in (OPT_DOMAIN_NAME, OPT_MESSAGE)
                and not body.isascii()
            ):
                raise _bad(f"option {code} of {len(body)} bytes")
        if OPT_MESSAGE_TYPE not in options:
            raise _bad("no message type (RFC 2131 §3: option 53 in every message)")
        return cls(buf, options)

    def fields(self) -> tuple[int, int, int, int, int, int, int, bytes, bytes, bytes, bytes, bytes]:
        """op, htype, hlen, hops, xid, secs, flags, ciaddr, yiaddr, siaddr, giaddr, chaddr."""
        return _FIXED.unpack_from(self.buf)

    def message(self) -> Dhcp4Message:
        op, _htype, hlen, _hops, xid, secs, flags, ciaddr, yiaddr, siaddr, giaddr, chaddr = (
            self.fields()
        )
        o = self.options

        def addresses(code: int) -> list[bytes]:
            body = o.get(code, b"")
            return [body[i : i + 4] for i in range(0, len(body), 4)]

        def number(code: int) -> int | None:
            body = o.get(code)
            return None if body is None else int(_U32.unpack(body)[0])

        def text(code: int) -> str | None:
            body = o.get(code)
            return None if body is None else body.decode("ascii")

        return Dhcp4Message(
            op=op, xid=xid, chaddr=chaddr[: min(hlen, 16)], message_type=o[OPT_MESSAGE_TYPE][0],
            secs=secs, flags=flags, ciaddr=ciaddr, yiaddr=yiaddr, siaddr=siaddr, giaddr=giaddr,
            subnet_mask=o.get(OPT_SUBNET_MASK), routers=addresses(OPT_ROUTER),
            dns_servers=addresses(OPT_DNS), domain_name=text(OPT_DOMAIN_NAME),
            requested_ip=o.get(OPT_REQUESTED_IP), lease_time_s=number(OPT_LEASE_TIME),
            server_id=o.get(OPT_SERVER_ID), params=o.get(OPT_PARAMS, b""),
            message=text(OPT_MESSAGE), renewal_time_s=number(OPT_RENEWAL_TIME),
            rebinding_time_s=number(OPT_REBINDING_TIME), client_id=o.get(OPT_CLIENT_ID),
        )  # fmt: skip
