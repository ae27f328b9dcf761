"""The supervisor's spare process: started ahead, it becomes the shard whose
spec reaches it through a pipe (the spec's fds by multiprocess's resource
sharer, as no spawn is in progress), or exits when the pipe closes unused."""

from __future__ import annotations

import socket
import time

import multiprocess

from shardnet.common.link_tx import LinkTxSpec, open_writer
from shardnet.dispatcher.supervisor import standby


def _child_writes(spec: LinkTxSpec) -> None:
    writer = open_writer(spec)
    writer.write([b"from", b" the spare"], None)
    writer.close()


def test_a_spare_becomes_the_process_of_a_spec_sent_later() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ctx = multiprocess.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=standby, args=(_child_writes, recv))
    proc.start()
    recv.close()
    try:
        time.sleep(0.2)  # running and waiting: the spec is sent to a process already there
        send.send(LinkTxSpec("tap", 0, fd=a.fileno()))
        send.close()
        b.settimeout(30)
        assert b.recv(4096) == b"from the spare"
        proc.join(30)
        assert proc.exitcode == 0
    finally:
        if proc.is_alive():
            proc.kill()
        a.close()
        b.close()


def test_a_spare_whose_pipe_closes_exits() -> None:
    ctx = multiprocess.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=standby, args=(_child_writes, recv))
    proc.start()
    recv.close()
    send.close()
    proc.join(30)
    assert proc.exitcode == 0
