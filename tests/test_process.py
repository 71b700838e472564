"""The command line starts with glibc keeping freed memory (``fedweave.process``): rounds
that allocate and free 40 MB blocks stop costing page faults, the user's own setting and the opt-out
are respected, and the fresh process runs the same command once."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from fedweave.process import OPT_OUT, SETTING, TUNABLES, wanted

GLIBC = sys.platform == "linux" and (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")

CHILD = """
import json, os, resource, sys
from fedweave.process import reuse_freed_memory
print("start", flush=True)
reuse_freed_memory()
import torch
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def round_():  # a round's stacks: 40 MB blocks allocated, filled and freed
    a = torch.empty(10_000_000).fill_(1)
    b = torch.empty(10_400_000).fill_(1)
    c = torch.empty(10_000_000).fill_(2)
    del a
    d = torch.empty(9_000_000).fill_(3)
    del b, c, d
for _ in range(5):
    round_()
before = faults()
for _ in range(3):
    round_()
print(json.dumps({"faults": faults() - before, "tunables": os.environ.get("GLIBC_TUNABLES"),
                  "argv": sys.argv[1:]}))
"""


def child(env: dict[str, str]) -> tuple[list[str], dict[str, object]]:
    out = subprocess.run([sys.executable, "-c", CHILD, "run", "x.yaml"], capture_output=True,
                         text=True, check=True, timeout=120,
                         env={k: v for k, v in {**os.environ, **env}.items() if v is not None})
    lines = out.stdout.strip().splitlines()
    return lines[:-1], json.loads(lines[-1])


@pytest.mark.slow  # two interpreters importing torch
@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_freed_blocks_are_reused_without_page_faults() -> None:
    env = {k: v for k, v in os.environ.items() if k not in (TUNABLES, OPT_OUT)}
    starts, kept = child({**env, TUNABLES: "", OPT_OUT: ""})
    assert starts == ["start", "start"]  # the command ran again in the fresh process, once
    assert kept["tunables"] == SETTING and kept["argv"] == ["run", "x.yaml"]
    starts, system = child({**env, OPT_OUT: "system"})
    assert starts == ["start"] and system["tunables"] in (None, "")
    pages = 3 * 157_600_000 // 4096  # three rounds of four blocks
    assert int(system["faults"]) > pages // 2  # glibc gave the blocks back and faults them again
    assert int(kept["faults"]) < pages // 20


def test_the_users_own_setting_and_other_platforms_are_left_alone() -> None:
    assert not wanted({TUNABLES: "glibc.malloc.arena_max=2"})
    assert not wanted({OPT_OUT: "system"})
    assert wanted({TUNABLES: "glibc.rtld.nns=4"}) == GLIBC
    assert wanted({}) == GLIBC


def ended(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)


def test_exit_now_runs_the_exit_handlers_and_keeps_the_status() -> None:
    out = ended("import atexit, sys\n"
                "from fedweave.process import exit_now\n"
                "atexit.register(lambda: print('handler ran'))\n"
                "sys.stdout.write('unflushed line')\n"
                "exit_now(3)\n"
                "print('never')")
    assert out.returncode == 3
    assert out.stdout == "unflushed linehandler ran\n"
    out = ended("from fedweave.process import exit_now\nexit_now('bad input')")
    assert out.returncode == 1 and out.stderr.strip() == "bad input"


def test_exit_now_waits_for_a_running_thread() -> None:
    out = ended("import threading, time\n"
                "from fedweave.process import exit_now\n"
                "def late():\n"
                "    time.sleep(0.3)\n"
                "    print('thread finished', flush=True)\n"
                "threading.Thread(target=late).start()\n"
                "exit_now(0)")
    assert out.returncode == 0 and out.stdout == "thread finished\n"
