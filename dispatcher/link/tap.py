"""A TAP device (``/dev/net/tun``, ``IFF_TAP|IFF_NO_PI``) as shardnet's link.

The TAP is the kernel's end of a virtual wire: its MAC and addresses belong
to the kernel; shardnet is the host at the other end, with its own MAC.
With ``IFF_VNET_HDR`` (the default where the kernel offers it) every frame
carries a virtio-net header both ways (``common/wire/virtio.py``): what we
write may ask for checksum offload and TSO whatever the TAP's offloads; what
we read carries partial checksums and GRO super-frames once ``set_offload``
allows them. ``open`` allows checksum, TSO4, TSO6 and TSO-ECN offloads by
default: the kernel then hands over TCP super-frames of up to 64 KiB whose
checksum it vouches for, instead of one MTU frame (and one checksum to
verify in Python) per segment. Constants from ``linux/if_tun.h``.

The device is created when missing, brought up with the MTU asked for
(pyroute2), and deleted on ``close()`` only if this link created it: a
persistent TAP that existed before stays.

Reads are non-blocking ``readinto`` calls, one frame per syscall (a TAP has
no batch read), through the receive loop all links share
(``common/rx_batch.py``).
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import struct
from collections.abc import Sequence

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from ...common.link_tx import BytesLike, LinkError, LinkTxSpec, TapWriter
from ...common.rx_batch import BatchReader, Recv
from ...common.wire.virtio import (
    VIRTIO_NET_HDR_LEN,
    VIRTIO_NET_HDR_SIZES,
    VirtioNetHeader,
)
from .admission import LinkAdmission, attach_admission
from .base import (
    RX_ARENA,
    RX_CHUNK,
    Frame,
    LinkBase,
    LinkCaps,
    check_ifname,
    interface_mac,
    resolve_mac,
)
from .steering import attach_steering

TUN_PATH = "/dev/net/tun"
NETNS_RUN_DIR = "/run/netns"  # where `ip netns add` names namespaces

# linux/if_tun.h ioctls
TUNSETIFF = 0x400454CA
TUNGETFEATURES = 0x800454CF
TUNSETOFFLOAD = 0x400454D0  # argument by value
TUNSETVNETHDRSZ = 0x400454D8
TUNSETVNETLE = 0x400454DC
# ifr_flags
IFF_TUN = 0x0001
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_MULTI_QUEUE = 0x0100
IFF_VNET_HDR = 0x4000
# TUNSETOFFLOAD flags: what the kernel may hand us (receive side)
TUN_F_CSUM = 0x01  # partial checksums (NEEDS_CSUM)
TUN_F_TSO4 = 0x02  # TCPv4 super-frames (needs TUN_F_CSUM)
TUN_F_TSO6 = 0x04  # TCPv6 super-frames (needs TUN_F_CSUM)
TUN_F_TSO_ECN = 0x08  # super-frames with CWR (untested here)
TUN_F_UFO = 0x10  # UDP fragmentation offload (untested here)
TUN_F_USO4 = 0x20  # UDP segmentation, Linux 6.2+ (untested here)
TUN_F_USO6 = 0x40

# What ``open`` lets the kernel hand us by default: partial checksums and
# TCP super-frames (GRO/TSO), with CWR kept on the first segment (TSO_ECN).
RX_OFFLOADS = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN

_IFREQ = struct.Struct("16sH22x")  # ifr_name, ifr_flags, rest of the union


def _open_tun() -> int:
    try:
        return os.open(TUN_PATH, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise LinkError(
            f"{TUN_PATH} is missing: load the tun module (modprobe tun)", errno.ENOENT
        ) from None
    except PermissionError as exc:
        raise LinkError(
            f"no permission to open {TUN_PATH}: run as root or with CAP_NET_ADMIN", exc.errno
        ) from None


def _exists(name: str) -> bool:
    """Whether ``name`` exists in this process's network namespace."""
    try:
        socket.if_nametoindex(name)
    except OSError:
        return False
    return True


class TapLink(LinkBase):
    """A TAP device; open it with ``TapLink.open``."""

    MODE = IFF_TAP  # the device's mode in TUNSETIFF
    KIND = "tap"  # LinkTxSpec.kind
    WHAT = "TAP"  # in messages

    def __init__(
        self,
        fd: int,
        name: str,
        *,
        mtu: int,
        mac: bytes,
        vnet_hdr_len: int,
        multi_queue: bool,
        created: bool,
        rx_arena: int = RX_ARENA,
        netns: str | None = None,
    ) -> None:
        self.fd = fd
        self.name = name
        self.mtu = mtu
        self.mac = mac
        self.vnet_hdr_len = vnet_hdr_len
        self.multi_queue = multi_queue
        self.created = created  # close() deletes the device only then
        self.netns = netns  # the namespace the device was moved to (None: ours)
        self.offload = 0  # TUN_F_* the kernel may use on frames it hands us
        self.tx_offload = False  # shards may ask for checksum offload and TSO
        self._file = open(fd, "rb", buffering=0, closefd=False)
        self._rx = BatchReader(
            self._recv(), f"{self.WHAT} {name}", vnet_hdr_len, self, arena=rx_arena, chunk=RX_CHUNK
        )
        self._writer = self._make_writer(fd, vnet_hdr_len)
        self._queues: list[int] = []
        # --multi-queue: how the kernel picks a frame's queue ("ebpf": our
        # flow hash, steering.py; "automq: why not" otherwise).
        self.steering = ""
        # The kernel-side admission filter ("ebpf", or why not: admission.py).
        self.admission: LinkAdmission | None = None
        self.link_filter = ""
        self._closed = False
        self._init_counters()

    @classmethod
    def open(
        cls,
        name: str,
        *,
        mtu: int = 1500,
        mac: bytes | str | None = None,
        vnet_hdr: bool = True,
        vnet_hdr_len: int = VIRTIO_NET_HDR_LEN,
        multi_queue: bool = False,
        offload: bool = True,
        netns: str | None = None,
    ) -> TapLink:
        """Attach to TAP ``name``, creating it if missing, and bring it up
        with ``mtu``. ``mac`` is shardnet's own address (random
        ``02:xx:..`` when None), not the TAP's. ``vnet_hdr``: use the
        virtio-net header if the kernel offers it. ``offload``: let the
        kernel hand over partial checksums and TCP super-frames (needs the
        header). ``netns``: move the device into that network namespace
        (a name under /run/netns) once made; the fd keeps working. Raises
        LinkError with a one-line message."""
        raw = check_ifname(name)
        mac = resolve_mac(mac)
        if vnet_hdr_len not in VIRTIO_NET_HDR_SIZES:
            raise ValueError(f"vnet_hdr_len must be 10 or 12, not {vnet_hdr_len}")
        if not 68 <= mtu <= 65521:  # RFC 791 minimum; tun's max MTU (MAX_MTU - ETH_HLEN)
            raise LinkError(f"MTU {mtu} out of range 68..65521")
        existed = netns is None and _exists(name)
        fd = _open_tun()
        try:
            features = struct.unpack("I", fcntl.ioctl(fd, TUNGETFEATURES, bytes(4)))[0]
            use_vnet = vnet_hdr and bool(features & IFF_VNET_HDR)
            flags = cls.MODE | IFF_NO_PI | (IFF_VNET_HDR if use_vnet else 0)
            if multi_queue:
                if not features & IFF_MULTI_QUEUE:
                    raise LinkError("this kernel has no multi-queue TAP")
                flags |= IFF_MULTI_QUEUE
            try:
                res = fcntl.ioctl(fd, TUNSETIFF, _IFREQ.pack(raw, flags))
            except OSError as exc:
                raise _setiff_error(name, exc, multi_queue, cls.WHAT) from None
            name = _IFREQ.unpack(res)[0].rstrip(b"\0").decode()  # "tap%d" names resolved
            size = vnet_hdr_len if use_vnet else 0
            if size:
                fcntl.ioctl(fd, TUNSETVNETHDRSZ, struct.pack("i", size))
                try:  # virtio 1.x byte order; a no-op on little-endian hosts
                    fcntl.ioctl(fd, TUNSETVNETLE, struct.pack("i", 1))
                except OSError:
                    pass
            fcntl.ioctl(fd, TUNSETOFFLOAD, 0)  # a persistent TAP may have kept some
            _set_up(name, mtu, netns, cls.WHAT)
        except BaseException:
            os.close(fd)
            if not existed:
                _delete(name, netns)
            raise
        link = cls(
            fd,
            name,
            mtu=mtu,
            mac=mac,
            vnet_hdr_len=size,
            multi_queue=multi_queue,
            created=not existed,
            netns=netns,
        )
        if offload and size:
            try:
                link.set_offload(RX_OFFLOADS)
            except LinkError:
                link.close()
                raise
        link.tx_offload = bool(offload and size)
        return link

    # --- facts

    @property
    def capabilities(self) -> LinkCaps:  # type: ignore[override]
        caps = LinkCaps.NONE
        if self.vnet_hdr_len:
            caps |= LinkCaps.VNET_HDR
            if self.tx_offload:
                # tun_get_user() accepts NEEDS_CSUM and GSO frames whatever the offloads
                caps |= LinkCaps.TX_CSUM | LinkCaps.TX_TSO4 | LinkCaps.TX_TSO6
            if self.offload & TUN_F_CSUM:
                caps |= LinkCaps.RX_CSUM
            if self.offload & (TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_UFO | TUN_F_USO4 | TUN_F_USO6):
                caps |= LinkCaps.RX_GSO
        if self.multi_queue:
            caps |= LinkCaps.MULTI_QUEUE
        return caps

    @property
    def kernel_mac(self) -> bytes:
        """The TAP's own MAC: the kernel side's address on this link."""
        return interface_mac(self.name)

    def fileno(self) -> int:
        return self.fd

    def _recv(self) -> Recv:
        return self._file.readinto

    def _make_writer(self, fd: int, vnet_hdr_len: int) -> TapWriter:
        return TapWriter(fd, vnet_hdr_len)

    # --- configuration

    def set_offload(self, flags: int) -> None:
        """Let the kernel hand us partial checksums and super-frames
        (``TUN_F_*``; TSO needs ``TUN_F_CSUM``). Needs the virtio-net header."""
        if not self.vnet_hdr_len:
            raise ValueError("offloads need the virtio-net header (vnet_hdr=True)")
        try:
            fcntl.ioctl(self.fd, TUNSETOFFLOAD, flags)
        except OSError as exc:
            raise LinkError(
                f"{self.WHAT} {self.name} refused offloads 0x{flags:x}", exc.errno or 0
            ) from None
        self.offload = flags

    def steer(self, nshards: int) -> str:
        """Queue ``i + 1`` for shard ``i``'s flows from their first frame,
        queue 0 (ours) for the rest (``steering.attach_steering``)."""
        self.steering = attach_steering(self.fd, nshards)
        return self.steering

    def admit(self, nshards: int) -> str:
        """Cut floods of SYNs and control-plane frames down in the kernel,
        before the TAP's queue (``admission.py``); "ebpf" or why not."""
        self.admission, self.link_filter = attach_admission(self.fd, nshards)
        return self.link_filter

    def open_queue(self) -> int:
        """Attach one more queue of a multi-queue TAP and return its fd
        (non-blocking, closed with the link). The kernel puts each flow on
        the queue ``steer``'s program names (without it: on one queue of its
        own choosing, learnt from the queue we write the flow on)."""
        if not self.multi_queue:
            raise ValueError(f"TAP {self.name} is not multi-queue")
        fd = _open_tun()
        flags = IFF_TAP | IFF_NO_PI | IFF_MULTI_QUEUE | (IFF_VNET_HDR if self.vnet_hdr_len else 0)
        try:
            fcntl.ioctl(fd, TUNSETIFF, _IFREQ.pack(self.name.encode(), flags))
            if self.vnet_hdr_len:
                fcntl.ioctl(fd, TUNSETVNETHDRSZ, struct.pack("i", self.vnet_hdr_len))
        except OSError as exc:
            os.close(fd)
            raise _setiff_error(self.name, exc, True) from None
        self._queues.append(fd)
        return fd

    # --- data path

    def read_batch(self, max_frames: int = 64) -> list[Frame]:
        return self._rx.frames(max_frames)

    def write(self, frame_parts: Sequence[BytesLike], vnet: VirtioNetHeader | None = None) -> None:
        self._writer.write(frame_parts, vnet)

    @property
    def writer(self) -> TapWriter:
        """The dispatcher's own writer (its counters are the dispatcher's tx)."""
        return self._writer

    def tx_spec(self) -> LinkTxSpec:
        return LinkTxSpec(self.KIND, self.vnet_hdr_len, fd=self.fd)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.admission is not None:
            self.admission.close(self.fd)
        self._file.close()
        for fd in self._queues:
            os.close(fd)
        os.close(self.fd)
        if self.created:
            _delete(self.name, self.netns)


def _setiff_error(name: str, exc: OSError, multi_queue: bool, what: str = "TAP") -> LinkError:
    if exc.errno == errno.EPERM:
        return LinkError(
            f"no permission to attach {what} {name}: needs CAP_NET_ADMIN or the {what}'s owner",
            exc.errno,
        )
    if exc.errno == errno.EBUSY:
        return LinkError(f"{what} {name} is in use by another process", exc.errno)
    if exc.errno == errno.EINVAL:
        return LinkError(
            f"{name} exists and is not a {'multi-queue ' if multi_queue else 'single-queue '}{what}",
            exc.errno,
        )
    return LinkError(f"cannot attach {what} {name}: {exc.strerror}", exc.errno or 0)


def _set_up(name: str, mtu: int, netns: str | None = None, what: str = "TAP") -> None:
    """Bring ``name`` up with ``mtu``, first moving it into ``netns`` (a
    move takes a device down: it is set up where it lands)."""
    try:
        if netns is not None:
            try:
                ns_fd = os.open(os.path.join(NETNS_RUN_DIR, netns), os.O_RDONLY | os.O_CLOEXEC)
            except OSError as exc:
                raise LinkError(f"no network namespace {netns}: {exc.strerror}") from None
            try:
                with IPRoute() as ipr:
                    index = ipr.link_lookup(ifname=name)[0]
                    ipr.link("set", index=index, net_ns_fd=ns_fd)
            finally:
                os.close(ns_fd)
        with IPRoute(netns=netns) if netns is not None else IPRoute() as ipr:
            index = ipr.link_lookup(ifname=name)[0]
            ipr.link("set", index=index, mtu=mtu, state="up")
    except (NetlinkError, IndexError, OSError) as exc:
        if isinstance(exc, LinkError):
            raise
        where = f" in namespace {netns}" if netns is not None else ""
        raise LinkError(f"cannot set {what} {name} up with MTU {mtu}{where}: {exc}") from None


def _delete(name: str, netns: str | None = None) -> None:
    try:
        with IPRoute(netns=netns) if netns is not None else IPRoute() as ipr:
            for index in ipr.link_lookup(ifname=name):
                ipr.link("del", index=index)
    except (NetlinkError, OSError):
        pass  # already gone (it dies with its last fd when not persistent)
