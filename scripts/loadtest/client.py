"""One load-test client: kernel sockets driving one scenario against one
server, run by the harness inside the client namespace as

    python -m shardnet.scripts.loadtest.client '{"kind": "crr", "host": ...}'

It prints JSON lines on stdout: ``{"progress": n}`` while it works (for the
harness's progress bar), ``{"opened": n, ...}`` when a ``conns`` client holds
its connections (it then waits for a line on stdin), and one
``{"result": {...}}`` at the end. Every timed client waits for ``start_at``
(wall clock, shared by every namespace) so that the phases of several client
processes overlap exactly; rates are computed by the harness from the
earliest start and the latest end.

Only the standard library: this runs once per client process and must start
quickly.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import random
import resource
import select
import selectors
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

BULK_BUF = 256 * 1024  # bytes per send/recv call in bulk and echo
RR_SIZE = 100  # request and reply bytes for crr and rr
IO_TIMEOUT_S = 10.0  # a stalled transfer counts as failed after this
CONNECT_TIMEOUT_S = 5.0
ECHO_MANY_CHUNK = 16 * 1024  # echo_many: chunks of 1 B up to this many
UDP_TIMEOUT_S = 0.2  # a silent window is counted lost and sent again
MAX_SAMPLES = 20_000  # latency samples returned per client (evenly thinned)
CONNS_CHECK_BATCH = 200  # connections probed at once in the conns check
CONNS_WINDOW = 32  # connects in flight per client process while opening conns
IP_BIND_ADDRESS_NO_PORT = 24  # linux/in.h: bind() without reserving a port
_LINGER_RST = struct.pack("ii", 1, 0)  # struct linger {on, 0 s}: close() sends a RST


@dataclass(slots=True)
class Spec:
    """What one client process does (the harness builds it as JSON)."""

    # bulk_in, bulk_out, echo, echo_many, crr, rr, udp, conns; the soak's
    # streams and probe; the attackers: synflood, fragflood, raflood, inject
    kind: str
    host: str
    port: int
    start_at: float = 0.0  # time.time() at which the timed phase starts
    duration: float = 1.0  # seconds of the timed phase
    source: str = ""  # local address to bind ("" lets the kernel choose)
    conns: int = 0  # connections to open and hold (conns), or to echo through (echo_many)
    window: int = 32  # datagrams in flight (udp)
    size: int = 64  # datagram payload bytes (udp); the largest chunk (streams)
    rate: float = 0.0  # frames per second (the flooders; 0: as fast as they can)
    host6: str = ""  # raflood: the server's IPv6 address (``host`` is its IPv4 one)
    ports: list[int] = field(default_factory=list)  # probe: the local ports to connect from


@dataclass(slots=True)
class Outcome:
    """What one client measured; the harness adds several up."""

    ops: int = 0  # transactions, connections or datagrams echoed
    bytes: int = 0  # payload bytes moved
    failed: int = 0  # connections that could not be made or broke
    corrupted: int = 0  # transfers whose bytes came back different
    lost: int = 0  # UDP datagrams that never came back
    fin: int = 0  # echo_many: connections the server ended with FIN before the client did
    rst: int = 0  # echo_many: connections the server reset
    t_start: float = 0.0  # wall clock of the timed phase
    t_end: float = 0.0
    lat_us: list[int] = field(default_factory=list)  # per-transaction latencies
    error: str = ""  # the first error seen, for the report
    # streams: every connection, crr: every one that broke, as [local address,
    # local port, opened, ended, how, bytes echoed]; ``how`` is one of ENDINGS
    flows: list[list[Any]] = field(default_factory=list)


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _socket(spec: Spec, kind: socket.SocketKind = socket.SOCK_STREAM) -> socket.socket:
    s = socket.socket(_family(spec.host), kind)
    if spec.source:
        if kind == socket.SOCK_STREAM:
            # The port is chosen at connect() by the 4-tuple, so one source
            # address gives a whole port range per destination.
            s.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        s.bind((spec.source, 0))
    return s


def _connect(spec: Spec) -> socket.socket:
    s = _socket(spec)
    try:
        s.settimeout(CONNECT_TIMEOUT_S)
        s.connect((spec.host, spec.port))
        s.settimeout(IO_TIMEOUT_S)
    except BaseException:
        s.close()
        raise
    return s


def _dial(spec: Spec, where: list[Any]) -> socket.socket:
    """``_connect`` that notes the local address and port in ``where`` as
    soon as the SYN leaves, so that a connect that fails is attributed to
    its flow too (the kernel lets go of the port of a refused connect)."""
    where.clear()
    s = _socket(spec)
    try:
        s.setblocking(False)
        err = s.connect_ex((spec.host, spec.port))
        where.extend(s.getsockname()[:2])
        if err not in (0, errno.EINPROGRESS):
            raise OSError(err, os.strerror(err))
        poll = select.poll()
        poll.register(s, select.POLLOUT)
        if not poll.poll(CONNECT_TIMEOUT_S * 1000):
            raise TimeoutError("connect timed out")
        err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            raise OSError(err, os.strerror(err))
        s.settimeout(IO_TIMEOUT_S)
    except BaseException:
        s.close()
        raise
    return s


def _wait_start(spec: Spec) -> float:
    delay = spec.start_at - time.time()
    if delay > 0:
        time.sleep(delay)
    return time.time()


class PeerClosed(ConnectionError):
    """The server ended the connection with FIN before the client was done."""


def _recv_exact(s: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise PeerClosed("the peer closed early")
        buf += chunk
    return bytes(buf)


def _fail(out: Outcome, exc: BaseException) -> None:
    out.failed += 1
    if not out.error:
        out.error = f"{type(exc).__name__}: {exc}"


# How a connection ended (``Outcome.flows``): intact to the end of the phase;
# reset (ECONNRESET or EPIPE); closed by the server first; no progress for
# IO_TIMEOUT_S (a hang); the connect failed; its echo came back different;
# anything else.
ENDINGS = ("ok", "rst", "fin", "hang", "connect", "corrupt", "error")
MAX_FLOWS = 20_000  # rows of ``flows`` one client returns (later ones are dropped)


def _ending(exc: BaseException) -> str:
    if isinstance(exc, PeerClosed):
        return "fin"
    if isinstance(exc, ConnectionResetError | BrokenPipeError):
        return "rst"
    if isinstance(exc, TimeoutError):
        return "hang"
    return "error"


def _note(out: Outcome, where: list[Any], opened: float, how: str, moved: int = 0) -> None:
    """One row of ``out.flows``."""
    if len(out.flows) < MAX_FLOWS:
        addr, port = where if len(where) == 2 else ("", 0)
        out.flows.append([addr, port, opened, time.time(), how, moved])


def _thin(samples: list[int]) -> list[int]:
    if len(samples) <= MAX_SAMPLES:
        return samples
    step = len(samples) / MAX_SAMPLES
    return [samples[int(i * step)] for i in range(MAX_SAMPLES)]


# --- bulk ----------------------------------------------------------------------------


def bulk_in(spec: Spec, out: Outcome) -> None:
    """Into ``discard`` until the deadline; the rate counts bytes up to the
    server's FIN (sent when it has read our FIN, so every byte arrived)."""
    chunk = memoryview(os.urandom(BULK_BUF))
    s = _connect(spec)
    with s:
        out.t_start = _wait_start(spec)
        end = out.t_start + spec.duration
        while time.time() < end:
            s.sendall(chunk)
            out.bytes += BULK_BUF
        s.shutdown(socket.SHUT_WR)
        while s.recv(BULK_BUF):
            pass  # discard sends nothing; b"" is its FIN
        out.t_end = time.time()


def chargen_pattern(length: int) -> bytes:
    """RFC 864 §"TCP Based Character Generator Service": lines of 72
    printable characters, each line starting one character later, CR LF
    after each; repeated to at least ``length`` bytes. Written from the RFC,
    not taken from the server, so that it checks the server."""
    chars = bytes(range(32, 127))
    block = b"".join((chars[i:] + chars)[:72] + b"\r\n" for i in range(95))
    return block * (length // len(block) + 2)


def bulk_out(spec: Spec, out: Outcome) -> None:
    """Out of ``chargen`` until the deadline, every byte checked against the
    RFC 864 pattern (a slice compare per read: memcmp speed)."""
    buf = bytearray(BULK_BUF)
    view = memoryview(buf)
    pattern = chargen_pattern(2 * BULK_BUF)
    period = 95 * 74
    s = _connect(spec)
    with s:
        out.t_start = _wait_start(spec)
        end = out.t_start + spec.duration
        while time.time() < end:
            n = s.recv_into(buf)
            if n == 0:
                raise ConnectionResetError("chargen closed the connection")
            offset = out.bytes % period
            if view[:n] != pattern[offset : offset + n]:
                out.corrupted += 1
                break
            out.bytes += n
        out.t_end = time.time()


# --- echo ----------------------------------------------------------------------------


def echo(spec: Spec, out: Outcome) -> None:
    """Random bytes into ``echo`` until the deadline, read back by a second
    thread; the SHA-256 of what went out must match what came back."""
    source = os.urandom(BULK_BUF + 4096)
    sent_hash, sent = hashlib.sha256(), [0]
    s = _connect(spec)
    errors: list[BaseException] = []

    def sender() -> None:
        try:
            end = out.t_start + spec.duration
            i = 0
            while time.time() < end:
                # a moving window over the random block: a reordered or
                # repeated chunk changes the digest
                offset = (i * 997) % 4096
                chunk = source[offset : offset + BULK_BUF]
                s.sendall(chunk)
                sent_hash.update(chunk)
                sent[0] += len(chunk)
                i += 1
            s.shutdown(socket.SHUT_WR)
        except OSError as exc:
            errors.append(exc)

    with s:
        out.t_start = _wait_start(spec)
        thread = threading.Thread(target=sender, daemon=True)
        thread.start()
        got_hash, got = hashlib.sha256(), 0
        buf = bytearray(BULK_BUF)
        view = memoryview(buf)
        while True:
            n = s.recv_into(buf)
            if n == 0:
                break
            got_hash.update(view[:n])
            got += n
        out.t_end = time.time()
        thread.join(IO_TIMEOUT_S)
    if errors:
        raise errors[0]
    out.bytes = got
    if got != sent[0] or got_hash.digest() != sent_hash.digest():
        out.corrupted += 1


def echo_many(spec: Spec, out: Outcome) -> None:
    """``spec.conns`` connections to ``echo``, each in its own thread
    sending a random chunk (1 B to 16 KiB) and reading it back until the
    deadline, then closing with FIN: ``ops`` the connections that ended
    intact, ``failed`` those that broke (of them ``fin`` ended by the
    server's FIN, ``rst`` by its reset), ``corrupted`` those whose echo came
    back different (compared byte for byte)."""
    socks = [_connect(spec) for _ in range(spec.conns)]
    lock = threading.Lock()
    out.t_start = _wait_start(spec)
    end = out.t_start + spec.duration

    def one(s: socket.socket) -> None:
        rng = random.Random()
        moved = 0
        try:
            with s:
                while time.time() < end:
                    chunk = rng.randbytes(rng.randrange(1, ECHO_MANY_CHUNK))
                    s.sendall(chunk)
                    if _recv_exact(s, len(chunk)) != chunk:
                        with lock:
                            out.corrupted += 1
                        return
                    moved += len(chunk)
                s.shutdown(socket.SHUT_WR)
                if s.recv(1):
                    raise ConnectionError("data after the last echo")
        except OSError as exc:
            with lock:
                _fail(out, exc)
                if isinstance(exc, PeerClosed):
                    out.fin += 1
                elif isinstance(exc, ConnectionResetError | BrokenPipeError):
                    out.rst += 1
            return
        finally:
            with lock:
                out.bytes += moved
        with lock:
            out.ops += 1

    threads = [threading.Thread(target=one, args=(s,), daemon=True) for s in socks]
    for t in threads:
        t.start()
    for t in threads:
        t.join(spec.duration + IO_TIMEOUT_S)
    out.t_end = time.time()


# --- request/response ----------------------------------------------------------------


def crr(spec: Spec, out: Outcome) -> None:
    """Connect, 100-byte request, 100-byte reply (``echo``), close; again."""
    request = os.urandom(RR_SIZE)
    out.t_start = _wait_start(spec)
    end = out.t_start + spec.duration
    lat: list[int] = []
    where: list[Any] = []
    while time.time() < end:
        now = time.perf_counter()
        opened = time.time()
        try:
            s = _dial(spec, where)
        except OSError as exc:
            _fail(out, exc)
            _note(out, where, opened, "connect")
            continue
        try:
            with s:
                s.sendall(request)
                reply = _recv_exact(s, RR_SIZE)
        except OSError as exc:
            _fail(out, exc)
            _note(out, where, opened, _ending(exc))
            continue
        lat.append(int((time.perf_counter() - now) * 1e6))
        if reply != request:
            out.corrupted += 1
        out.ops += 1
    out.t_end = time.time()
    out.bytes = out.ops * RR_SIZE
    out.lat_us = _thin(lat)


def rr(spec: Spec, out: Outcome) -> None:
    """100-byte ping-pong on one persistent connection to ``echo``."""
    request = os.urandom(RR_SIZE)
    lat: list[int] = []
    s = _connect(spec)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    with s:
        out.t_start = _wait_start(spec)
        end = out.t_start + spec.duration
        while time.time() < end:
            now = time.perf_counter()
            s.sendall(request)
            reply = _recv_exact(s, RR_SIZE)
            lat.append(int((time.perf_counter() - now) * 1e6))
            if reply != request:
                out.corrupted += 1
                break
            out.ops += 1
        out.t_end = time.time()
    out.bytes = out.ops * RR_SIZE
    out.lat_us = _thin(lat)


# --- soak ----------------------------------------------------------------------------

RECONNECT_PAUSE_S = 0.05  # streams: before a broken connection is replaced
PROBE_EVERY_S = 0.01  # probe: a new connection attempt this often


def streams(spec: Spec, out: Outcome) -> None:
    """``spec.conns`` connections to ``echo`` for the whole phase, each in
    its own thread echoing random chunks of 1 B up to ``spec.size`` bytes
    (compared byte for byte); one that breaks is replaced by a new one. Every
    connection made is a row of ``flows`` saying how it ended (``ENDINGS``);
    ``ops`` counts those intact to the deadline (then closed with FIN both
    ways)."""
    lock = threading.Lock()
    out.t_start = _wait_start(spec)
    end = out.t_start + spec.duration

    def one() -> None:
        rng = random.Random()
        where: list[Any] = []
        while time.time() < end:
            opened, moved, how = time.time(), 0, "ok"
            try:
                s = _dial(spec, where)
            except OSError as exc:
                how, error = "connect", exc
            else:
                try:
                    with s:
                        while time.time() < end:
                            chunk = rng.randbytes(rng.randrange(1, spec.size + 1))
                            s.sendall(chunk)
                            if _recv_exact(s, len(chunk)) != chunk:
                                how = "corrupt"
                                break
                            moved += len(chunk)
                        else:
                            s.shutdown(socket.SHUT_WR)
                            if s.recv(1):
                                raise ConnectionError("data after the last echo")
                except OSError as exc:
                    how, error = _ending(exc), exc
            with lock:
                _note(out, where, opened, how, moved)
                out.bytes += moved
                if how == "ok":
                    out.ops += 1
                elif how == "corrupt":
                    out.corrupted += 1
                else:
                    _fail(out, error)
            if how != "ok":
                time.sleep(RECONNECT_PAUSE_S)

    threads = [threading.Thread(target=one, daemon=True) for _ in range(spec.conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(spec.duration + CONNECT_TIMEOUT_S + IO_TIMEOUT_S)
    out.t_end = time.time()


def probe(spec: Spec, out: Outcome) -> None:
    """Waits for a line on stdin (the harness has just killed a shard), then
    starts a connection to ``echo`` every PROBE_EVERY_S from the next of
    ``spec.ports`` (ports whose flows hash to that shard), all in flight
    together, until one has echoed a byte or ``spec.duration`` is over:
    ``ops`` is 1 if one did, ``t_end`` when. Every socket closes with a
    RST: nothing stays behind on either side."""
    sys.stdin.readline()
    out.t_start = time.time()
    end = out.t_start + spec.duration
    any_addr = spec.source or ("::" if ":" in spec.host else "0.0.0.0")
    ports = iter(spec.ports)
    sel = selectors.DefaultSelector()
    made: list[socket.socket] = []
    next_at = out.t_start
    try:
        while not out.ops and (now := time.time()) < end:
            port = next(ports, None) if now >= next_at else None
            if port is not None:
                next_at = now + PROBE_EVERY_S
                s = socket.socket(_family(spec.host), socket.SOCK_STREAM)
                made.append(s)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
                s.setblocking(False)
                try:
                    s.bind((any_addr, port))
                except OSError:  # another client's connection holds it
                    continue
                if s.connect_ex((spec.host, spec.port)) in (0, errno.EINPROGRESS):
                    sel.register(s, selectors.EVENT_WRITE)
            wait = max(min(next_at, end) - time.time(), 0.0)
            for key, events in sel.select(timeout=wait) if sel.get_map() else ():
                ready = key.fileobj
                assert isinstance(ready, socket.socket)
                if events & selectors.EVENT_WRITE:  # connected, or refused
                    try:
                        sent = not ready.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                        sent = sent and ready.send(b"?") == 1
                    except OSError:
                        sent = False
                    if sent:
                        sel.modify(ready, selectors.EVENT_READ)
                    else:
                        sel.unregister(ready)
                    continue
                sel.unregister(ready)
                with contextlib.suppress(OSError):
                    if ready.recv(1) == b"?":
                        out.ops, out.t_end = 1, time.time()
            if not sel.get_map():
                time.sleep(max(min(next_at, end) - time.time(), 0.0))
    finally:
        sel.close()
        for s in made:
            s.close()
    if not out.ops:
        out.failed, out.t_end = 1, time.time()
        out.error = f"no new connection echoed within {spec.duration:g} s"


# --- UDP -----------------------------------------------------------------------------

_SEQ = struct.Struct("!Q")


def udp(spec: Spec, out: Outcome) -> None:
    """A window of datagrams in flight to UDP ``echo``; each carries a
    sequence number and a fixed filler, checked on the way back. A window
    silent for UDP_TIMEOUT_S is counted lost and refilled."""
    size = max(spec.size, _SEQ.size)
    filler = bytes(range(256)) * (size // 256 + 1)
    filler = filler[: size - _SEQ.size]
    s = _socket(spec, socket.SOCK_DGRAM)
    dst = (spec.host, spec.port)
    with s:
        s.settimeout(UDP_TIMEOUT_S)
        for _ in range(50):  # neighbour resolution done before the clock starts
            s.sendto(_SEQ.pack(0) + filler, dst)
            try:
                s.recv(65536)
                break
            except TimeoutError:
                continue
        outstanding: set[int] = set()
        seq = 1
        out.t_start = _wait_start(spec)
        end = out.t_start + spec.duration
        while time.time() < end:
            while len(outstanding) < spec.window:
                s.sendto(_SEQ.pack(seq) + filler, dst)
                outstanding.add(seq)
                seq += 1
            try:
                data = s.recv(65536)
            except TimeoutError:
                out.lost += len(outstanding)
                outstanding.clear()
                continue
            if len(data) != size or data[_SEQ.size :] != filler:
                out.corrupted += 1
                continue
            (got,) = _SEQ.unpack_from(data)
            if got in outstanding:  # a late echo of a window given up is ignored
                outstanding.remove(got)
                out.ops += 1
        out.t_end = time.time()
    out.bytes = out.ops * size


# --- synflood ------------------------------------------------------------------------

FLOOD_POOL = 65_536  # distinct frames a flooder sends round and round
_SPOOF_V4 = (198, 19)  # sources: 198.19.0.0/16, inside 198.18.0.0/15 and off the lab's link
_SPOOF_V6 = bytes.fromhex("20010db8005f")  # 2001:db8:5f::/48


def _link_towards(host: str) -> tuple[str, bytes, bytes]:
    """The interface the kernel sends to ``host`` by, its MAC and the next
    hop's (resolved by one ping first)."""
    ping = ["ping", "-6" if ":" in host else "-4", "-c", "1", "-W", "2", host]
    subprocess.run(ping, capture_output=True, check=False)
    route = json.loads(subprocess.run(["ip", "-j", "route", "get", host], capture_output=True,
                                      text=True, check=True).stdout)[0]  # fmt: skip
    dev = route["dev"]
    hop = route.get("gateway", host)
    neigh = json.loads(subprocess.run(["ip", "-j", "neigh", "show", hop, "dev", dev],
                                      capture_output=True, text=True, check=True).stdout)  # fmt: skip
    if not neigh or "lladdr" not in neigh[0]:
        raise OSError(f"no link-layer address for {hop} on {dev}")
    with open(f"/sys/class/net/{dev}/address") as f:
        own = bytes.fromhex(f.read().strip().replace(":", ""))
    return dev, own, bytes.fromhex(neigh[0]["lladdr"].replace(":", ""))


def _sum16(data: bytes) -> int:
    total = int.from_bytes(data + b"\0" * (len(data) & 1), "big") % 0xFFFF
    return ~total & 0xFFFF


def _ip_frame(
    own: bytes, to_mac: bytes, src: bytes, dst: bytes, proto: int, l4: bytes, *,
    ident: int = 0, df: bool = False, hop_limit: int = 64,
) -> bytes:  # fmt: skip
    """An Ethernet frame from ``own`` to ``to_mac`` carrying ``l4`` (TCP or
    ICMPv6: its checksum field, at 16 or 2, filled in over the pseudo-header)
    in IPv6 or IPv4 by the addresses' length."""
    at = 2 if proto == 58 else 16
    if len(src) == 16:
        pseudo = src + dst + struct.pack("!I3xB", len(l4), proto)
        l4 = l4[:at] + _sum16(pseudo + l4).to_bytes(2, "big") + l4[at + 2 :]
        ip = struct.pack("!IHBB", 6 << 28, len(l4), proto, hop_limit) + src + dst
        return to_mac + own + b"\x86\xdd" + ip + l4
    pseudo = src + dst + struct.pack("!BBH", 0, proto, len(l4))
    l4 = l4[:at] + _sum16(pseudo + l4).to_bytes(2, "big") + l4[at + 2 :]
    head = struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(l4), ident, 0x4000 if df else 0,
                       hop_limit, proto, 0) + src + dst  # fmt: skip
    head = head[:10] + _sum16(head).to_bytes(2, "big") + head[12:]
    return to_mac + own + b"\x08\x00" + head + l4


def _syn_frames(spec: Spec, own: bytes, peer: bytes, count: int) -> list[bytes]:
    """``count`` SYNs to ``spec.host:spec.port`` from spoofed sources and
    ports, each with its checksums (MSS 1460, as a client sends)."""
    rng = random.Random(1)
    v6 = ":" in spec.host
    dst = socket.inet_pton(socket.AF_INET6 if v6 else socket.AF_INET, spec.host)
    frames = []
    for _ in range(count):
        sport = rng.randrange(1024, 65536)
        tcp = struct.pack("!HHIIBBHHH", sport, spec.port, rng.getrandbits(32), 0,
                          6 << 4, 0x02, 64240, 0, 0) + bytes((2, 4, 5, 180))  # fmt: skip
        if v6:
            src = _SPOOF_V6 + rng.randbytes(10)
            frames.append(_ip_frame(own, peer, src, dst, 6, tcp))
        else:
            src = bytes(_SPOOF_V4) + rng.randbytes(2)
            frames.append(_ip_frame(own, peer, src, dst, 6, tcp, ident=rng.getrandbits(16)))
    return frames


def synflood(spec: Spec, out: Outcome) -> None:
    """Spoofed SYNs to ``spec.port`` as fast as this process sends them, for
    the duration (an attacker beside the well-behaved clients)."""
    dev, own, peer = _link_towards(spec.host)
    _flood(spec, out, _syn_frames(spec, own, peer, FLOOD_POOL), dev)


def _frag_frames(spec: Spec, own: bytes, peer: bytes, count: int) -> list[bytes]:
    """``count`` IP fragments to ``spec.host`` that never complete: tiny or
    up to 1 KB, at random offsets, some overlapping the one before, from
    spoofed sources, each datagram's last fragment never sent."""
    rng = random.Random(2)
    v6 = ":" in spec.host
    dst = socket.inet_pton(socket.AF_INET6 if v6 else socket.AF_INET, spec.host)
    frames: list[bytes] = []
    ident = offset = 0
    src = b""
    for i in range(count):
        if i % 4 == 0:  # a new datagram every four fragments
            ident = rng.getrandbits(32 if v6 else 16)
            offset = 8 * rng.randrange(0, 1000)
            src = (_SPOOF_V6 + rng.randbytes(10)) if v6 else bytes(_SPOOF_V4) + rng.randbytes(2)
        data = rng.randbytes(8 * rng.choice((1, 2, 16, 128)))
        if rng.random() < 0.25:
            offset = max(0, offset - 8)  # overlaps the previous fragment
        if v6:
            frag = struct.pack("!BBHI", 17, 0, offset | 1, ident)  # M set
            ip = struct.pack("!IHBB", 6 << 28, len(frag) + len(data), 44, 64) + src + dst
            frames.append(peer + own + b"\x86\xdd" + ip + frag + data)
        else:
            head = bytearray(struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(data), ident,
                                         0x2000 | (offset >> 3), 64, 17, 0) + src + dst)  # fmt: skip
            head[10:12] = _sum16(bytes(head)).to_bytes(2, "big")
            frames.append(peer + own + b"\x08\x00" + bytes(head) + data)
        offset += len(data)
    return frames


def _flood(spec: Spec, out: Outcome, frames: list[bytes], dev: str) -> None:
    """``frames`` round and round on ``dev`` for the duration: ``ops``
    counts the frames the kernel took, ``lost`` those it refused."""
    pool = len(frames)
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    with s:
        s.bind((dev, 0))
        send = s.send
        out.t_start = _wait_start(spec)
        end = out.t_start + spec.duration
        sent = refused = 0
        burst = 64 if spec.rate else 1024  # paced: 64 frames, then wait for their time
        while (now := time.time()) < end:
            if spec.rate and sent > (now - out.t_start) * spec.rate:
                time.sleep(min(burst / spec.rate, end - now))
                continue
            at = sent % pool
            for frame in frames[at : at + burst]:
                try:
                    send(frame)
                except OSError:
                    refused += 1
            sent += len(frames[at : at + burst])
        out.t_end = time.time()
    out.ops = sent - refused
    out.lost = refused


def _nd_frames(spec: Spec, own: bytes, peer: bytes, count: int) -> list[bytes]:
    """``count`` frames of a neighbour-discovery flood, in turn: a Router
    Advertisement from a new router (random link-local address and MAC)
    with two random /64 prefixes in 2001:db8::/32 (on-link, autonomous), a
    Neighbor Solicitation for ``spec.host``'s IPv6 address from a new
    sender in its /64 and an ARP request for its IPv4 address from a new
    sender in its /24 (both with new link-layer addresses to learn)."""
    rng = random.Random(4)
    v6_host = socket.inet_pton(socket.AF_INET6, spec.host6)
    v4_host = socket.inet_pton(socket.AF_INET, spec.host)
    all_nodes = bytes.fromhex("ff020000000000000000000000000001")
    solicited = bytes.fromhex("ff0200000000000000000001ff") + v6_host[13:]
    frames = []
    for i in range(count):
        mac = bytes([0x02]) + rng.randbytes(5)
        kind = i % 3
        if kind == 0:  # RA (RFC 4861 §4.2) + SLLA + 2 Prefix Information options
            src = bytes.fromhex("fe800000000000000000") + rng.randbytes(6)
            body = struct.pack("!BBHBBHII", 134, 0, 0, 64, 0, 1800, 0, 0)
            body += bytes((1, 1)) + mac
            for _ in range(2):
                prefix = bytes.fromhex("20010db8") + rng.randbytes(4) + bytes(8)
                body += struct.pack("!BBBBIII", 3, 4, 64, 0xC0, 86400, 14400, 0) + prefix
            dst, dst_mac = all_nodes, bytes.fromhex("333300000001")
        elif kind == 1:  # NS for the host's address (RFC 4861 §4.3) + SLLA
            src = v6_host[:8] + rng.randbytes(8)
            body = struct.pack("!BBHI", 135, 0, 0, 0) + v6_host + bytes((1, 1)) + mac
            dst, dst_mac = solicited, bytes.fromhex("3333ff") + v6_host[13:]
        else:  # ARP request (RFC 826) from a new sender on the host's /24
            sender = v4_host[:3] + bytes((rng.randrange(3, 255),))
            arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + mac + sender + bytes(6) + v4_host
            frames.append(b"\xff" * 6 + mac + b"\x08\x06" + arp)
            continue
        frames.append(_ip_frame(mac, dst_mac, src, dst, 58, body, hop_limit=255))
    return frames


def raflood(spec: Spec, out: Outcome) -> None:
    """Router Advertisements, Neighbor Solicitations and ARP requests from
    ever new senders, as fast as this process sends them."""
    dev, own, peer = _link_towards(spec.host)
    _flood(spec, out, _nd_frames(spec, own, peer, FLOOD_POOL), dev)


def fragflood(spec: Spec, out: Outcome) -> None:
    """Never-completing fragments as fast as this process sends them."""
    dev, own, peer = _link_towards(spec.host)
    _flood(spec, out, _frag_frames(spec, own, peer, FLOOD_POOL), dev)


def _established_to(host: str, port: int) -> list[tuple[str, int, str, int]]:
    """This namespace's established TCP connections to ``host:port`` as
    (local address, local port, remote address, remote port)."""
    cmd = ["ss", "-Htn", "state", "established", "dst", host, "dport", "=", str(port)]
    rows = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.splitlines()
    out = []
    for row in rows:
        local, remote = row.split()[-2:]
        la, lp = local.rsplit(":", 1)
        ra, rp = remote.rsplit(":", 1)
        out.append((la.strip("[]"), int(lp), ra.strip("[]"), int(rp)))
    return out


# What a blind attacker sends (RFC 5961 §1's threat: the addresses and ports
# known, the sequence numbers not): RST, RST+ACK, SYN, data, FIN.
_BLIND_FLAGS = (0x04, 0x14, 0x02, 0x18, 0x11)


def _blind_frames(
    flows: list[tuple[str, int, str, int]], own: bytes, peer: bytes, count: int
) -> list[bytes]:
    """``count`` segments on ``flows`` (as their client), each with random
    sequence and acknowledgement numbers and its checksums."""
    rng = random.Random(3)
    frames = []
    for i in range(count):
        la, lp, ra, rp = flows[i % len(flows)]
        v6 = ":" in ra
        fam = socket.AF_INET6 if v6 else socket.AF_INET
        src, dst = socket.inet_pton(fam, la), socket.inet_pton(fam, ra)
        flags = _BLIND_FLAGS[rng.randrange(len(_BLIND_FLAGS))]
        data = rng.randbytes(64) if flags == 0x18 else b""
        tcp = struct.pack("!HHIIBBHHH", lp, rp, rng.getrandbits(32), rng.getrandbits(32),
                          5 << 4, flags, 65535, 0, 0) + data  # fmt: skip
        ident = 0 if v6 else rng.getrandbits(16)
        frames.append(_ip_frame(own, peer, src, dst, 6, tcp, ident=ident, df=True))
    return frames


def inject(spec: Spec, out: Outcome) -> None:
    """Blind segments into every established connection to ``spec.host:
    spec.port`` in this namespace (found at ``start_at``), as fast as this
    process sends them (``spec.rate`` paces), for the duration."""
    dev, own, peer = _link_towards(spec.host)
    _wait_start(spec)
    flows = _established_to(spec.host, spec.port)
    if not flows:
        raise ConnectionError(f"no established connection to {spec.host}:{spec.port} to attack")
    spec.start_at = 0.0  # the phase has begun: _flood starts at once
    _flood(spec, out, _blind_frames(flows, own, peer, FLOOD_POOL // 8), dev)


# --- conns ---------------------------------------------------------------------------


def _raise_nofile(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= need:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, max(hard, need)))
    except (ValueError, OSError):  # no CAP_SYS_RESOURCE: up to the hard limit
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _open_many(spec: Spec, out: Outcome) -> list[socket.socket]:
    """CONNS_WINDOW non-blocking connects in flight until ``spec.conns``
    are open (or failed)."""
    sel = selectors.DefaultSelector()
    held: list[socket.socket] = []
    started = 0
    last_report = 0
    deadline: dict[socket.socket, float] = {}
    while started < spec.conns or deadline:
        while started < spec.conns and len(deadline) < CONNS_WINDOW:
            s = _socket(spec)
            s.setblocking(False)
            started += 1
            err = s.connect_ex((spec.host, spec.port))
            if err not in (0, 115):  # EINPROGRESS
                _fail(out, OSError(err, os.strerror(err)))
                s.close()
                continue
            sel.register(s, selectors.EVENT_WRITE)
            deadline[s] = time.monotonic() + CONNECT_TIMEOUT_S
        for key, _ in sel.select(timeout=0.5):
            ready = key.fileobj
            assert isinstance(ready, socket.socket)
            s = ready
            sel.unregister(s)
            del deadline[s]
            err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                _fail(out, OSError(err, os.strerror(err)))
                s.close()
            else:
                held.append(s)
        now = time.monotonic()
        for s, t in list(deadline.items()):
            if now > t:
                sel.unregister(s)
                del deadline[s]
                _fail(out, TimeoutError("connect timed out"))
                s.close()
        if len(held) - last_report >= 500:
            emit({"progress": len(held)})
            last_report = len(held)
    sel.close()
    return held


def _check_all(held: list[socket.socket], out: Outcome) -> None:
    """Every held connection still answers: one byte out, the same back.
    Sent in batches before reading, so the round trips overlap."""
    for i in range(0, len(held), CONNS_CHECK_BATCH):
        batch = held[i : i + CONNS_CHECK_BATCH]
        alive = []
        for s in batch:
            try:
                s.setblocking(True)
                s.settimeout(IO_TIMEOUT_S)
                s.sendall(b"?")
                alive.append(s)
            except OSError as exc:
                _fail(out, exc)
        for s in alive:
            try:
                if s.recv(1) == b"?":
                    out.ops += 1
                else:
                    _fail(out, ConnectionResetError("no answer"))
            except OSError as exc:
                _fail(out, exc)


def conns(spec: Spec, out: Outcome) -> None:
    """Open ``spec.conns`` connections to ``echo`` and hold them; after the
    harness measured memory (a line on stdin), check every one answers and
    report; close them only at the next line (or EOF), so that no client's
    closing burst lands on another client's check. They close with a RST
    (SO_LINGER 0): a FIN handshake for 100,000 connections at once keeps a
    slow stack retransmitting for minutes and leaves orphaned kernel
    sockets behind when the namespace goes; the check already proved them."""
    _raise_nofile(spec.conns + 256)
    out.t_start = time.time()
    held = _open_many(spec, out)
    out.t_end = time.time()
    emit({"opened": len(held), "failed": out.failed, "t_start": out.t_start, "t_end": out.t_end})
    try:
        sys.stdin.readline()
        _check_all(held, out)
        out.bytes = out.ops
        emit({"result": asdict(out)})
        sys.stdin.readline()
    finally:
        for s in held:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
            s.close()


SCENARIOS = {
    "bulk_in": bulk_in,
    "bulk_out": bulk_out,
    "echo": echo,
    "echo_many": echo_many,
    "crr": crr,
    "rr": rr,
    "udp": udp,
    "conns": conns,
    "streams": streams,
    "probe": probe,
    "synflood": synflood,
    "fragflood": fragflood,
    "raflood": raflood,
    "inject": inject,
}


def main(argv: list[str]) -> int:
    spec = Spec(**json.loads(argv[0]))
    out = Outcome()
    try:
        SCENARIOS[spec.kind](spec, out)
    except OSError as exc:  # the connection could not be made or broke
        _fail(out, exc)
        if not out.t_end:
            out.t_end = time.time()
        emit({"result": asdict(out)})
        return 0
    if spec.kind != "conns":  # conns reported before closing its connections
        emit({"result": asdict(out)})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
