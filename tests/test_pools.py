"""A pool closed early ends its workers although the parent has a SIGTERM handler that only records the signal (as
Lightning's and the pre-emption handler do): the workers inherit the handler, and `Pool.terminate` waited for ever
(a data build in the middle of the suite hung for 900 s)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLOSED_EARLY = """
import signal, time
from common.pools import fork_pool

signal.signal(signal.SIGTERM, lambda *_: print("recorded", flush=True))


def slow(value):
    time.sleep(0.2)
    return value


def results():
    with fork_pool(2) as pool:
        yield from pool.imap(slow, range(100), chunksize=32)


stream = results()
next(stream)
stream.close()
print("closed", flush=True)
"""


def test_a_pool_closed_early_ends_its_workers_whatever_the_parents_sigterm_handler():
    run = subprocess.run([sys.executable, "-c", CLOSED_EARLY], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.splitlines() == ["closed"]  # no worker ran the parent's handler
