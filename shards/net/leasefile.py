"""The DHCPv4 lease remembered across restarts (RFC 2131 §3.2: a client
that remembers its address starts in INIT-REBOOT): one small JSON file per
link in the state directory (``<state_dir>/<link>.dhcp4``), written whole
to a temporary file and renamed over the old one.

The lease belongs to the link's MAC (the client's identity, RFC 2131 §2:
``chaddr``): a stack started with another MAC does not ask for it.

The file is a hint, not configuration: one that cannot be read or does not
hold an address is ignored with a warning (the client then starts with
DISCOVER), one that cannot be written only costs the INIT-REBOOT.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os

from shardnet.common.addr import format_ip, format_mac, parse_ip

log = logging.getLogger("shardnet.net")


class LeaseFile:
    def __init__(self, state_dir: str, link: str, mac: bytes) -> None:
        self.path = os.path.join(state_dir, f"{link}.dhcp4")
        self.state_dir = state_dir
        self.mac = format_mac(mac)
        self._warned = False

    def load(self) -> bytes | None:
        """The remembered address, None when there is none (or no usable
        one, or it was another MAC's)."""
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
            if data["mac"] != self.mac:
                return None
            address = parse_ip(str(data["address"]))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring the DHCPv4 lease in %s: %s", self.path, exc)
            return None
        return address if len(address) == 4 else None

    def store(self, address: bytes | None, server: bytes | None) -> None:
        if address is None:  # §3.1 step 5: after a NAK the address is not ours to ask for
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("cannot forget the DHCPv4 lease in %s: %s", self.path, exc.strerror)
            return
        text = json.dumps({"address": format_ip(address), "mac": self.mac,
                           "server": format_ip(server) if server else None})  # fmt: skip
        tmp = f"{self.path}.{os.getpid()}.tmp"
        try:
            os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(text + "\n")
            os.replace(tmp, self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            if not self._warned:  # once: a read-only state dir is not worth a log line per renewal
                self._warned = True
                log.warning("cannot keep the DHCPv4 lease in %s: %s", self.path, exc.strerror)
