"""The RFC 7217 secret key that keeps a stack's opaque IPv6 addresses the
same across restarts: generated once per link and kept in the state
directory (``/var/lib/shardnet/<link>.secret`` by default, mode 0600),
as RFC 7217 §5 asks of the secret ("stable across restarts").

A ``secret =`` in the config (or the embedded stack's) wins and nothing is
written. A state directory that cannot be written (a read-only system)
leaves the stack running with a key for this run only, said in a warning; a
file that is there but holds no valid key is a configuration error (the
addresses it stood for cannot be kept, and silently replacing it would
change them).
"""

from __future__ import annotations

import contextlib
import os

from shardnet.common.config import ConfigError

SECRET_BYTES = 16  # RFC 7217 §5: at least 128 bits


def stable_secret(state_dir: str, link: str) -> tuple[str, str | None]:
    """The link's secret (hex) and a warning when it could not be kept."""
    path = os.path.join(state_dir, f"{link}.secret")
    kept = _read(path)
    if kept is not None:
        return kept, None
    secret = os.urandom(SECRET_BYTES).hex()
    try:
        os.makedirs(state_dir, mode=0o700, exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, (secret + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)  # never over a key another start wrote meanwhile
        except FileExistsError:
            pass
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    except OSError as exc:
        return secret, (
            f"cannot keep the RFC 7217 secret in {path} ({exc.strerror}): "
            "opaque IPv6 addresses will change at the next start"
        )
    kept = _read(path)
    return (kept if kept is not None else secret), None


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            text = f.read().strip()
    except (FileNotFoundError, NotADirectoryError):  # not made yet (or cannot be)
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read the secret in {path}: {exc.strerror}") from None
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) < SECRET_BYTES:
        raise ConfigError(
            f"{path} holds no secret (hex, at least {SECRET_BYTES} bytes): "
            "fix it, or remove it to make a new one (the opaque addresses change)"
        )
    return text
