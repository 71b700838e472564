"""Starting distributed runs: ``fedweave run --procs N`` on one host, and the torchrun commands
for reference system 001's ``hosts.json``.

``launch_local`` starts N ranks of ``fedweave <args>`` itself (torch.distributed's
env:// rendezvous on a free localhost port: ``MASTER_ADDR``, ``MASTER_PORT``, ``RANK``,
``LOCAL_RANK``, ``WORLD_SIZE``), instead of going through torchrun, so that it controls the
ranks' lives.

On Linux the ranks are forked from the launcher, which has imported torch and fedweave
already (``forkable_parent``): a rank starts in milliseconds instead of paying its own
interpreter start and ``import torch`` (seconds each, and N of them compete for the cores).
The launcher keeps torch at one thread until it forks: a child of a process whose OpenMP
runtime has started a thread team hangs on its first parallel region (libgomp). Elsewhere,
or when the launcher runs other threads, each rank is a fresh ``python -m fedweave``
(``fedweave.distributed.spawn``). The numbers are the same either way: a rank builds its run
from the config alone.

What the launcher does with its ranks:

- the ranks die with the launcher, however it dies (``kill -9`` included): each rank is
  started with ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` (Linux; elsewhere the launcher still
  kills its ranks on every exit it survives);
- SIGINT and SIGTERM sent to the launcher (Ctrl-C included: the ranks ignore the terminal's
  SIGINT) are forwarded as SIGTERM (+ SIGCONT, for stopped ranks), then SIGKILL follows
  ``KILL_GRACE_S`` later; a rank stopped by the launcher exits without a line of its own
  (``LAUNCHED_ENV``), the launcher prints one and exits 128 + the signal (130, 143);
- when one rank fails, the others are killed at once (SIGKILL: checkpoints and records are
  written atomically and locks die with their process, so nothing is lost; a stopped rank
  dies too), where torchrun waits 30 s and prints its ChildFailedError traceback. A failure
  is reported by one line, the most specific cause: a rank killed by a signal (SIGTERM
  included: a rank exits 143 on it), else a rank stopped (SIGSTOP, state ``T`` in /proc), else
  the line of the rank that noticed the loss (``fedweave.distributed.process_group``; ranks
  hand it to the launcher in ``FAILURE_ENV``'s folder instead of printing it, so two ranks
  never print two lines). torch's C++ warnings of a lost peer (a TCPStore stack of 50 frames)
  are off in the ranks (``TORCH_CPP_LOG_LEVEL=ERROR`` unless set);
- a rank stopped (SIGSTOP) for longer than ``launcher.timeout_s`` ends the command at once,
  whatever its rank (rank 0, which hosts the rendezvous store, included); a rank that hangs
  without being stopped is caught by the ranks' own watchdogs, ``launcher.timeout_s`` plus
  their grace (at most 5 s) after the other ranks reach their next collective.

Exit codes: 0 every rank finished; 2 bad input (checked once before any rank starts, or a
rank's one-line error); 1 a rank failed or lost a peer (dead, hung or stopped for longer than
``launcher.timeout_s``); 128 + N a rank was killed by signal N (137: SIGKILL, e.g. the OOM
killer), or the launcher itself was stopped by signal N.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path
from types import FrameType
from typing import NoReturn, Protocol

from fedweave.distributed import FAILURE_ENV, LAUNCHED_ENV
from fedweave.distributed.spawn import die_with_parent, fedweave_argv
from fedweave.errors import UserError
from fedweave.process import end_process, exit_status
from fedweave.training.threads import WAIT_ENV

KILL_GRACE_S = 3.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def recorded_timeout(config_yaml: Path) -> float:
    """``launcher.timeout_s`` of a run directory's config.yaml (read as data, no plugins)."""
    from fedweave.config import LauncherConfig, load_raw
    from fedweave.config.legacy import migrate_legacy_keys

    try:
        launcher = migrate_legacy_keys(load_raw(config_yaml), warn=False).get("launcher")
        value = launcher.get("timeout_s") if isinstance(launcher, dict) else None
        return float(value) if value is not None else LauncherConfig().timeout_s
    except (TypeError, ValueError, UserError):
        return LauncherConfig().timeout_s


def _rank_setup(launcher: int) -> Callable[[], None]:
    """``preexec_fn`` of a rank: die with the launcher, ignore the terminal's SIGINT."""
    return die_with_parent(launcher, ignore_sigint=True)


def _say(line: str) -> None:
    sys.stderr.flush()
    os.write(2, f"\nerror: {line}\n".encode())


def _stopped(pid: int) -> bool:
    """Whether ``pid`` is stopped (SIGSTOP/SIGTSTP, or by a debugger), from /proc."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state in ("T", "t")


def _signal_of(code: int | None) -> int | None:
    """The signal that ended a rank: killed by it, or exited 143 on SIGTERM."""
    if code is None:
        return None
    if code < 0:
        return -code
    return signal.SIGTERM if code == 128 + signal.SIGTERM else None


_FORKABLE = [False]


def forkable_parent() -> None:
    """Import torch in the launcher at one thread, before anything runs a torch op, so that
    its ranks can be forked from it (module docstring). torch reads its C++ log level once,
    when it loads, so the ranks' quiet one (``TORCH_CPP_LOG_LEVEL=ERROR`` unless set) is set
    first; a launcher that had imported torch already starts fresh processes."""
    fresh = "torch" not in sys.modules
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    import torch

    torch.set_num_threads(1)
    _FORKABLE[0] = fresh


class Rank(Protocol):
    """What the launcher needs of a rank (``subprocess.Popen``'s methods)."""

    pid: int

    def poll(self) -> int | None: ...
    def wait(self) -> int: ...
    def send_signal(self, sig: int) -> None: ...


class ForkedRank:
    """A rank forked from the launcher, seen through ``Popen``'s methods (a return code is
    ``-N`` for a rank killed by signal N, as with ``Popen``)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self) -> int:
        if self.returncode is None:
            _, status = os.waitpid(self.pid, 0)
            self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, sig)


def _can_fork() -> bool:
    """Fork ranks: on Linux, after ``forkable_parent`` imported torch, with torch still at one
    thread and no other thread running in the launcher (a lock held by one would never be
    released in the child)."""
    torch = sys.modules.get("torch")
    return (sys.platform.startswith("linux") and _FORKABLE[0] and torch is not None
            and torch.get_num_threads() == 1 and threading.active_count() == 1)


def _fork_rank(entry: Callable[[], None], args: list[str], env: dict[str, str],
               launcher: int) -> ForkedRank:
    """Fork a rank that runs the command line ``entry`` on ``args`` with ``env`` and never
    returns here."""
    sys.stdout.flush()
    sys.stderr.flush()
    # SIGINT/SIGTERM held until the child has set its own handling (it ignores the
    # terminal's SIGINT), so none reaches it with the launcher's handlers
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    pid = os.fork()
    if pid:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
        return ForkedRank(pid)
    _rank_main(entry, args, env, launcher, held)


def _rank_main(entry: Callable[[], None], args: list[str], env: dict[str, str],
               launcher: int, held: Iterable[int] = ()) -> NoReturn:
    """A forked rank: ``entry`` with ``sys.argv`` = ``fedweave *args``, ended by ``os._exit``
    whatever happens, so that nothing of the launcher's stack runs in it. ``held``: the
    signal mask to restore once the rank's own handling is set."""
    status = 1
    try:
        os.environ.clear()
        os.environ.update(env)
        _rank_setup(launcher)()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
        sys.argv = ["fedweave", *args]
        entry()
        status = 0
    except SystemExit as exc:
        status = exit_status(exc.code)
    except BaseException:
        traceback.print_exc()
    finally:
        end_process(status)


def _start_rank(entry: Callable[[], None] | None, args: list[str], env: dict[str, str],
                launcher: int) -> Rank:
    """A rank: forked to run ``entry`` when given and the launcher allows it (``_can_fork``),
    else a fresh process."""
    if entry is not None and _can_fork():
        return _fork_rank(entry, args, env, launcher)
    return subprocess.Popen(fedweave_argv(*args), env=env, preexec_fn=_rank_setup(launcher))


def launch_local(procs: int, args: list[str], timeout_s: float = 300.0,
                 entry: Callable[[], None] | None = None) -> int:
    """Run ``fedweave *args`` as ``procs`` ranks on this host; returns the exit code (module
    docstring). ``timeout_s``: the run's ``launcher.timeout_s``. ``entry``: the command line's
    main function, for ranks forked from this process (without it each rank is a fresh
    process)."""
    # not a TemporaryDirectory: its clean-up at exit would run in forked ranks too
    failures = tempfile.mkdtemp(prefix="fedweave-ranks-")
    try:
        return _launch(procs, args, timeout_s, Path(failures), entry)
    finally:  # a forked rank never returns here (``_rank_main``)
        shutil.rmtree(failures, ignore_errors=True)


def _launch(procs: int, args: list[str], timeout_s: float, failures: Path,
            entry: Callable[[], None] | None = None) -> int:
    port = free_port()
    me = os.getpid()
    # where a resume would continue: the directory given, else the one rank 0 printed
    where = next((args[i + 1] for i, a in enumerate(args[:-1]) if a in ("--resume", "--dir")),
                 "<the run directory printed above>")
    children: list[Rank] = []
    for rank in range(procs):
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
               "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(procs),
               "LOCAL_WORLD_SIZE": str(procs), "GROUP_RANK": "0", LAUNCHED_ENV: str(me),
               FAILURE_ENV: str(failures)}
        env.setdefault(WAIT_ENV, "PASSIVE")  # fedweave.training.threads (the user's kept)
        env.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
        children.append(_start_rank(entry, args, env, me))

    def send(sig: int) -> None:
        for c in children:
            if c.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    c.send_signal(sig)

    def stop_all() -> None:
        """SIGTERM (+ SIGCONT for stopped ranks), SIGKILL after the grace period."""
        send(signal.SIGTERM)
        send(signal.SIGCONT)
        deadline = time.monotonic() + KILL_GRACE_S
        while time.monotonic() < deadline and any(c.poll() is None for c in children):
            time.sleep(0.05)
        send(signal.SIGKILL)

    received: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    stopped_since: dict[int, float] = {}
    code = 0
    try:
        while True:
            if received:
                stop_all()
                name = signal.Signals(received[0]).name
                _say(f"fedweave run --procs {procs} stopped by {name}; every rank was stopped "
                     f"(resume from the last checkpoint with fedweave run --resume {where} "
                     f"--procs {procs})")
                code = 128 + received[0]
                break
            codes = [c.poll() for c in children]
            failed = [(r, c) for r, c in enumerate(codes) if c not in (None, 0)]
            now = time.monotonic()
            for r, c in enumerate(children):
                if codes[r] is None and _stopped(c.pid):
                    stopped_since.setdefault(r, now)
                else:
                    stopped_since.pop(r, None)
            stuck = [r for r, t in stopped_since.items() if now - t > timeout_s]
            if failed or stuck:
                # the others go at once: nothing a rank does on the way out matters (checkpoints
                # and records are written atomically, locks die with the process), and a rank
                # that is killed cannot add a second line or hang on a lost peer
                stopped = sorted(stopped_since)
                send(signal.SIGKILL)
                send(signal.SIGCONT)
                for c in children:
                    c.wait()
                code, line = _cause(failed, stopped, timeout_s, failures)
                if line and "--resume RUN_DIR" in line:  # a rank's line: the folder is known here
                    _say(line.replace("--resume RUN_DIR", f"--resume {where} --procs {procs}"))
                elif line:
                    _say(f"{line}; resume from the last checkpoint with fedweave run --resume "
                         f"{where} --procs {procs}")
                break
            if all(c is not None for c in codes):
                break
            time.sleep(0.05)
    finally:
        send(signal.SIGKILL)
        for c in children:
            c.wait()
        for s, h in old.items():
            signal.signal(s, h)
    return code


def _cause(failed: list[tuple[int, int]], stopped: list[int], timeout_s: float,
           failures: Path) -> tuple[int, str | None]:
    """(exit code, the one line or None when a rank printed it) of a failed run: a signal
    death, then a stopped rank, then bad input (rank 0 said it), then the line of the first
    rank that noticed the loss of a peer."""
    signals = [(r, _signal_of(c)) for r, c in failed if _signal_of(c) is not None]
    if signals:
        rank, signum = signals[0]
        assert signum is not None
        name = signal.Signals(signum).name
        return 128 + signum, (f"distributed run stopped: rank {rank} was killed by {name} "
                              f"(exit {128 + signum}); the other ranks were stopped")
    if stopped:
        return 1, (f"distributed run stopped: rank {', '.join(map(str, stopped))} was stopped "
                   f"(SIGSTOP) and did not answer within launcher.timeout_s={timeout_s:g} s; the "
                   "other ranks were stopped")
    if any(c == 2 for _, c in failed):
        return 2, None
    for r, _ in sorted(failed):  # a rank's own crash is the cause, not a peer's noticing it
        crash = failures / f"rank{r}.crash.txt"
        if crash.is_file():
            return 1, crash.read_text().strip().removeprefix("error: ")
    for r, _ in sorted(failed):
        path = failures / f"rank{r}.txt"
        if path.is_file():
            return 1, path.read_text().strip().removeprefix("error: ")
    rank, first = min(failed)
    return int(first), (f"distributed run stopped: rank {rank} failed (exit {first}); the other "
                        "ranks were stopped")


def torchrun_commands(hosts: Path, config: str,
                     port: int | None = None) -> list[tuple[str, str]]:
    """One ``(host, command)`` per entry of reference system 001's ``hosts.json``: entry i of
    the file is rank i, one process per host, the rendezvous store on the first entry's
    ``addr:port`` (``port`` replaces its port). The commands use torchrun's *static* rendezvous
    (``--node-rank`` with ``--master-addr``/``--master-port``): the c10d rendezvous ignores
    ``--node-rank`` and orders hosts by name. With ``data.nodes`` = number of hosts (and
    ``topology.file``/``hosts`` in ``config``) host i computes node i. The other entries' ports
    are not used: ``unused_ports``."""
    from fedweave.topology import read_host_list

    entries = read_host_list(hosts)
    head = entries[0]
    master = head.addr.strip("[]")
    store = head.port if port is None else port
    return [(h.addr, f"torchrun --nnodes {len(entries)} --node-rank {i} --nproc-per-node 1 "
                     f"--master-addr {master} --master-port {store} -m fedweave run {config}")
            for i, h in enumerate(entries)]


def unused_ports(hosts: Path, port: int | None = None) -> str | None:
    """The warning for a ``hosts.json`` whose entries after the first give ports other than
    the rendezvous port (the first's, or ``port``), or None. torch.distributed listens on one
    port, the rendezvous store on the first host; the other ranks connect to it and exchange
    over ports the OS picks (gloo, NCCL), so those entries' ports cannot be honoured."""
    from fedweave.topology import read_host_list

    head, *rest = read_host_list(hosts)
    store = head.port if port is None else port
    other = [h for h in rest if h.port != store]
    if not other:
        return None
    listed = ", ".join(f"{h.name} ({h.port})" for h in other)
    return (f"{hosts}: the ports of {listed} are not used: torch.distributed listens only on "
            f"the rendezvous port of the first host, {head.name} ({head.addr}:{store}); "
            "the other hosts connect to it and exchange over ports the system picks")
