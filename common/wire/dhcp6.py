"""DHCPv6 messages (RFC 8415 §8) and the options a client uses.

``Dhcp6View.checked`` validates a client/server message from the wire (the
UDP payload); ``Dhcp6Message`` is its parsed form and builds the client's
own messages (``to_bytes``).

Options kept: Client Identifier (1), Server Identifier (2), IA_NA (3) with
IA Address (5) and Status Code (13) inside, Option Request (6), Preference
(7), Elapsed Time (8), Authentication (11, carried: the client accepts no
Reconfigure, so it never checks one), Status Code (13), Rapid Commit (14),
Reconfigure Message (19), DNS Recursive Name Server (23, RFC 3646 §3),
Domain Search List (24, RFC 3646 §4), Information Refresh Time (32,
RFC 8415 §21.23), SOL_MAX_RT (82) and INF_MAX_RT (83, §21.24, §21.25). Others are skipped whole. Relay messages (12, 13) are
not a client's business and are refused like any other non-server type.

Bounds (own): at most ``MAX_IA_ADDRESSES`` IA Address options per IA_NA,
``MAX_IAS`` IA_NA options and ``MAX_DNS_SERVERS`` servers per message; a
message beyond them is dropped (counted), so that parsing one costs a
bounded amount of memory whatever it holds.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from .errors import Drop, MalformedPacket
from .ndp import decode_domains, encode_domains

CLIENT_PORT = 546  # RFC 8415 §7.2
SERVER_PORT = 547
# RFC 8415 §7.1: All_DHCP_Relay_Agents_and_Servers (link-scoped).
ALL_DHCP_SERVERS = bytes.fromhex("ff020000000000000000000000010002")

# RFC 8415 §7.3 message types
SOLICIT, ADVERTISE, REQUEST, CONFIRM, RENEW, REBIND, REPLY, RELEASE, DECLINE = range(1, 10)
RECONFIGURE, INFORMATION_REQUEST = 10, 11
SERVER_TYPES = frozenset((ADVERTISE, REPLY, RECONFIGURE))

OPT_CLIENTID = 1
OPT_SERVERID = 2
OPT_IA_NA = 3
OPT_IAADDR = 5
OPT_ORO = 6
OPT_PREFERENCE = 7
OPT_ELAPSED_TIME = 8
OPT_AUTH = 11
OPT_STATUS_CODE = 13
OPT_RAPID_COMMIT = 14
OPT_RECONF_MSG = 19
OPT_DNS_SERVERS = 23  # RFC 3646 §3
OPT_DOMAIN_LIST = 24  # RFC 3646 §4
OPT_INFORMATION_REFRESH_TIME = 32  # RFC 8415 §21.23
OPT_SOL_MAX_RT = 82  # RFC 8415 §21.24
OPT_INF_MAX_RT = 83  # RFC 8415 §21.25

# RFC 8415 §21.13 status codes
STATUS_SUCCESS = 0
STATUS_UNSPEC_FAIL = 1
STATUS_NO_ADDRS_AVAIL = 2
STATUS_NO_BINDING = 3
STATUS_NOT_ON_LINK = 4
STATUS_USE_MULTICAST = 5

INFINITY = 0xFFFFFFFF  # RFC 8415 §7.7
DUID_LL = 3  # RFC 8415 §11.4
HTYPE_ETHERNET = 1
MAX_DUID_LEN = 130  # RFC 8415 §11.1: 2-byte type and up to 128 bytes
MAX_IA_ADDRESSES = 8
MAX_IAS = 4
MAX_DNS_SERVERS = 16

_HEADER = struct.Struct("!I")  # msg-type (8 bits) and transaction-id (24 bits)
_OPTION = struct.Struct("!HH")
_IA = struct.Struct("!III")
_IAADDR = struct.Struct("!16sII")
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_STATUS = struct.Struct("!H")


def _bad(reason: Drop, detail: str) -> MalformedPacket:
    return MalformedPacket(reason, detail, layer="dhcp6")


def client_duid(mac: bytes) -> bytes:
    """RFC 8415 §11.4 DUID-LL from the link's MAC: the same at every start
    (no time in it, unlike DUID-LLT), so a server knows the client again."""
    return struct.pack("!HH", DUID_LL, HTYPE_ETHERNET) + mac


@dataclass(slots=True)
class IaAddress:
    """RFC 8415 §21.6 IA Address option; lifetimes in seconds (INFINITY: forever)."""

    addr: bytes
    preferred: int
    valid: int
    status: int | None = None


@dataclass(slots=True)
class IaNa:
    """RFC 8415 §21.4 IA_NA option."""

    iaid: int
    t1: int
    t2: int
    addresses: list[IaAddress] = field(default_factory=list)
    status: int | None = None
    status_message: str = ""


@dataclass(slots=True)
class Dhcp6Message:
    """One DHCPv6 message with the options above (None or empty: absent)."""

    msg_type: int
    xid: int  # 24 bits
    client_id: bytes | None = None
    server_id: bytes | None = None
    ia_na: list[IaNa] = field(default_factory=list)
    oro: tuple[int, ...] = ()
    preference: int | None = None
    elapsed_cs: int | None = None  # hundredths of a second (§21.9)
    status: int | None = None
    status_message: str = ""
    rapid_commit: bool = False
    auth: bytes | None = None
    reconf_msg: int | None = None
    dns_servers: list[bytes] = field(default_factory=list)
    domains: tuple[str, ...] = ()
    info_refresh_s: int | None = None
    sol_max_rt_s: int | None = None
    inf_max_rt_s: int | None = None

    @classmethod
    def parse(cls, buf: bytes | bytearray | memoryview) -> Dhcp6Message:
        return Dhcp6View.checked(memoryview(bytes(buf))).message()

    def to_bytes(self) -> bytes:
        out = bytearray(_HEADER.pack((self.msg_type << 24) | (self.xid & 0xFFFFFF)))

        def put(code: int, body: bytes) -> None:
            out.extend(_OPTION.pack(code, len(body)))
            out.extend(body)

        if self.client_id is not None:
            put(OPT_CLIENTID, self.client_id)
        if self.server_id is not None:
            put(OPT_SERVERID, self.server_id)
        for ia in self.ia_na:
            body = bytearray(_IA.pack(ia.iaid, ia.t1, ia.t2))
            for a in ia.addresses:
                inner = _IAADDR.pack(a.addr, a.preferred, a.valid)
                if a.status is not None:
                    inner += _OPTION.pack(OPT_STATUS_CODE, 2) + _STATUS.pack(a.status)
                body += _OPTION.pack(OPT_IAADDR, len(inner)) + inner
            if ia.status is not None:
                msg = ia.status_message.encode()
                body += _OPTION.pack(OPT_STATUS_CODE, 2 + len(msg)) + _STATUS.pack(ia.status) + msg
            put(OPT_IA_NA, bytes(body))
        if self.oro:
            put(OPT_ORO, b"".join(_U16.pack(code) for code in self.oro))
        if self.preference is not None:
            put(OPT_PREFERENCE, bytes((self.preference,)))
        if self.elapsed_cs is not None:
            put(OPT_ELAPSED_TIME, _U16.pack(min(self.elapsed_cs, 0xFFFF)))
        if self.auth is not None:
            put(OPT_AUTH, self.auth)
        if self.status is not None:
            put(OPT_STATUS_CODE, _STATUS.pack(self.status) + self.status_message.encode())
        if self.rapid_commit:
            put(OPT_RAPID_COMMIT, b"")
        if self.reconf_msg is not None:
            put(OPT_RECONF_MSG, bytes((self.reconf_msg,)))
        if self.dns_servers:
            put(OPT_DNS_SERVERS, b"".join(self.dns_servers))
        if self.domains:
            put(OPT_DOMAIN_LIST, encode_domains(self.domains))
        for code, number in (
            (OPT_INFORMATION_REFRESH_TIME, self.info_refresh_s),
            (OPT_SOL_MAX_RT, self.sol_max_rt_s),
            (OPT_INF_MAX_RT, self.inf_max_rt_s),
        ):
            if number is not None:
                put(code, _U32.pack(number))
        return bytes(out)


def _options(buf: memoryview) -> list[tuple[int, memoryview]]:
    """The (code, body) options of ``buf``, every length checked (RFC 8415 §21.1)."""
    out: list[tuple[int, memoryview]] = []
    i, n = 0, len(buf)
    while i < n:
        if i + 4 > n:
            raise _bad(Drop.DHCP6_BAD_OPTION, "option header past the end")
        code, length = _OPTION.unpack_from(buf, i)
        if i + 4 + length > n:
            raise _bad(Drop.DHCP6_BAD_OPTION, f"option {code} past the end")
        out.append((code, buf[i + 4 : i + 4 + length]))
        i += 4 + length
    return out


def _status(body: memoryview) -> tuple[int, str]:
    if len(body) < 2:
        raise _bad(Drop.DHCP6_BAD_OPTION, "status code of fewer than 2 bytes")
    # §21.13: a UTF-8 message; an undecodable one is replaced, not a reason to drop.
    return _STATUS.unpack_from(body)[0], bytes(body[2:]).decode("utf-8", "replace")[:256]


def _ia_na(body: memoryview) -> IaNa:
    if len(body) < _IA.size:
        raise _bad(Drop.DHCP6_BAD_OPTION, f"IA_NA of {len(body)} bytes")
    ia = IaNa(*_IA.unpack_from(body))
    for code, opt in _options(body[_IA.size :]):
        if code == OPT_IAADDR:
            if len(opt) < _IAADDR.size:
                raise _bad(Drop.DHCP6_BAD_OPTION, f"IA Address of {len(opt)} bytes")
            if len(ia.addresses) >= MAX_IA_ADDRESSES:
                raise _bad(Drop.DHCP6_TOO_MANY, f"more than {MAX_IA_ADDRESSES} addresses in an IA")
            addr, preferred, valid = _IAADDR.unpack_from(opt)
            a = IaAddress(addr, preferred, valid)
            for inner, sopt in _options(opt[_IAADDR.size :]):
                if inner == OPT_STATUS_CODE:
                    a.status = _status(sopt)[0]
            ia.addresses.append(a)
        elif code == OPT_STATUS_CODE:
            ia.status, ia.status_message = _status(opt)
    return ia


class Dhcp6View:
    """A DHCPv6 message on the wire (the UDP payload)."""

    __slots__ = ("buf", "options")

    def __init__(self, buf: memoryview, options: list[tuple[int, memoryview]]) -> None:
        self.buf = buf
        self.options = options

    @classmethod
    def checked(cls, buf: memoryview) -> Dhcp6View:
        """The header and every option's bounds (the bodies are checked by ``message``)."""
        if len(buf) < _HEADER.size:
            raise _bad(Drop.DHCP6_TRUNCATED, f"{len(buf)} bytes")
        return cls(buf, _options(buf[_HEADER.size :]))

    def message(self) -> Dhcp6Message:
        word = _HEADER.unpack_from(self.buf)[0]
        msg = Dhcp6Message(word >> 24, word & 0xFFFFFF)
        for code, body in self.options:
            n = len(body)
            if code in (OPT_CLIENTID, OPT_SERVERID):
                if not 2 < n <= MAX_DUID_LEN:  # §11.1: type and at least one byte
                    raise _bad(Drop.DHCP6_BAD_OPTION, f"DUID of {n} bytes")
                if code == OPT_CLIENTID:
                    msg.client_id = bytes(body)
                else:
                    msg.server_id = bytes(body)
            elif code == OPT_IA_NA:
                if len(msg.ia_na) >= MAX_IAS:
                    raise _bad(Drop.DHCP6_TOO_MANY, f"more than {MAX_IAS} IA_NA options")
                msg.ia_na.append(_ia_na(body))
            elif code == OPT_ORO:
                if n % 2:
                    raise _bad(Drop.DHCP6_BAD_OPTION, f"option request of {n} bytes")
                msg.oro = tuple(_U16.unpack_from(body, i)[0] for i in range(0, min(n, 64), 2))
            elif code == OPT_PREFERENCE:
                if n != 1:
                    raise _bad(Drop.DHCP6_BAD_OPTION, f"preference of {n} bytes")
                msg.preference = body[0]
            elif code == OPT_ELAPSED_TIME:
                if n != 2:
                    raise _bad(Drop.DHCP6_BAD_OPTION, f"elapsed time of {n} bytes")
                msg.elapsed_cs = _U16.unpack_from(body)[0]
            elif code == OPT_AUTH:
                msg.auth = bytes(body[:64])
            elif code == OPT_STATUS_CODE:
                msg.status, msg.status_message = _status(body)
            elif code == OPT_RAPID_COMMIT:
                msg.rapid_commit = True
            elif code == OPT_RECONF_MSG:
                if n != 1:
                    raise _bad(Drop.DHCP6_BAD_OPTION, f"reconfigure message of {n} bytes")
                msg.reconf_msg = body[0]
            elif code == OPT_DNS_SERVERS:
                if n % 16 or not n:
                    raise _bad(Drop.DHCP6_BAD_OPTION, f"DNS servers of {n} bytes")
                if n // 16 > MAX_DNS_SERVERS:
                    raise _bad(Drop.DHCP6_TOO_MANY, f"{n // 16} DNS servers")
                msg.dns_servers = [bytes(body[i : i + 16]) for i in range(0, n, 16)]
            elif code == OPT_DOMAIN_LIST:
                try:
                    msg.domains = decode_domains(body)
                except MalformedPacket:
                    raise _bad(Drop.DHCP6_BAD_OPTION, "domain search list") from None
            elif code in (OPT_INFORMATION_REFRESH_TIME, OPT_SOL_MAX_RT, OPT_INF_MAX_RT):
                if n != 4:
                    raise _bad(Drop.DHCP6_BAD_OPTION, f"option {code} of {n} bytes")
                number = _U32.unpack_from(body)[0]
                if code == OPT_INFORMATION_REFRESH_TIME:
                    msg.info_refresh_s = number
                elif code == OPT_SOL_MAX_RT:
                    msg.sol_max_rt_s = number
                else:
                    msg.inf_max_rt_s = number
        return msg
