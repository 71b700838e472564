"""Starting distributed runs: ``fedweave run --procs N`` on one host, and the torchrun commands
for reference system 001's ``hosts.json``.

``launch_local`` starts N ranks of ``python -m fedweave <args>`` itself (torch.distributed's
env:// rendezvous on a free localhost port: ``MASTER_ADDR``, ``MASTER_PORT``, ``RANK``,
``LOCAL_RANK``, ``WORLD_SIZE``), instead of going through torchrun, so that it controls the
ranks' lives: SIGINT/SIGTERM sent to the launcher are forwarded to every rank; when one rank
fails the others get SIGTERM and, 3 s later, SIGKILL (torchrun waits 30 s, and a stopped rank
ignores SIGTERM); the launcher's exit code is the first failing rank's (or 0). Each rank's
``prctl(PR_SET_PDEATHSIG)`` is not portable, so the launcher also kills its ranks on exit.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

KILL_GRACE_S = 3.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch_local(procs: int, args: list[str]) -> int:
    """Run ``python -m fedweave *args`` as ``procs`` ranks on this host; returns the exit code."""
    port = free_port()
    children: list[subprocess.Popen[bytes]] = []
    for rank in range(procs):
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
               "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(procs),
               "LOCAL_WORLD_SIZE": str(procs), "GROUP_RANK": "0"}
        children.append(subprocess.Popen([sys.executable, "-m", "fedweave", *args], env=env))

    def stop(sig: int) -> None:
        for c in children:
            if c.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    c.send_signal(sig)

    def forward(signum: int, frame: FrameType | None) -> None:
        stop(signum)

    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    code = 0
    try:
        while True:
            codes = [c.poll() for c in children]
            failed = [c for c in codes if c not in (None, 0)]
            if failed and code == 0:
                code = int(failed[0])
                stop(signal.SIGTERM)
                deadline = time.monotonic() + KILL_GRACE_S
                while time.monotonic() < deadline and any(c.poll() is None for c in children):
                    time.sleep(0.05)
                stop(signal.SIGKILL)
            if all(c is not None for c in codes):
                break
            time.sleep(0.05)
    finally:
        stop(signal.SIGKILL)
        for c in children:
            c.wait()
        for s, h in old.items():
            signal.signal(s, h)
    if code < 0:  # a rank killed by a signal: report it the shell's way
        code = 128 - code
    return code


def torchrun_commands(hosts: Path, config: str, port: int = 29400) -> list[tuple[str, str]]:
    """One ``(host, command)`` per entry of reference system 001's ``hosts.json``: entry i of
    the file is rank i, one process per host, the store on the first host. The commands use
    torchrun's *static* rendezvous (``--node-rank`` with ``--master-addr``/``--master-port``):
    the c10d rendezvous ignores ``--node-rank`` and orders hosts by name. With ``data.nodes`` =
    number of hosts (and ``topology.file``/``hosts`` in ``config``) host i computes node i."""
    from fedweave.topology import read_hosts

    addrs = list(read_hosts(hosts).values())
    head = addrs[0].rsplit(":", 1)[0]
    return [(addr.rsplit(":", 1)[0],
             f"torchrun --nnodes {len(addrs)} --node-rank {i} --nproc-per-node 1 "
             f"--master-addr {head} --master-port {port} -m fedweave run {config}")
            for i, addr in enumerate(addrs)]
