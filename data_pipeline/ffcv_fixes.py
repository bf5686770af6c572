"""Fixes to FFCV 1.0.2 and numba 0.68 that every process building FFCV loaders needs. `install_ffcv_fixes` applies
the two that patch library classes, once (`make_loader` calls it, so no loader is built without them); they patch
them for the whole process, so they are applied where loaders are built, never on import: a process that only reads
manifests or plots figures is left untouched. `stop_epoch` ends an epoch a caller left unfinished (`SeededLoader`
calls it).
"""

from __future__ import annotations

import collections
import contextlib
import functools
import os
import queue


@functools.cache
def install_ffcv_fixes() -> None:
    """Apply `keep_compiled_pipelines` and `numba_threads_only` (idempotent)."""
    keep_compiled_pipelines()
    numba_threads_only()


def keep_compiled_pipelines() -> None:
    """Stop numba from finalising dead dispatchers: work around a hang in long processes that build many loaders.

    Every FFCV Loader compiles its pipeline into fresh numba dispatchers. When an old loader's dispatchers are
    garbage-collected while a loader thread is compiling, numba's dispatcher finalizer (which unregisters the
    dead compiled functions) can spin without end inside that thread: seen here in the demo and in the test
    suite, stuck for over 15 minutes in `numba/core/dispatcher.py` `finalizer`. Skipping the finalizer only
    keeps dead pipelines' machine code registered (kilobytes per loader) until the process exits.
    """
    from numba.core.dispatcher import _DispatcherBase

    _DispatcherBase._make_finalizer = lambda self: _no_finalizer


def _no_finalizer() -> None:
    """The finalizer `keep_compiled_pipelines` installs."""


def numba_threads_only() -> None:
    """Keep FFCV loaders from resizing torch's intra-op thread pool.

    FFCV's `Compiler.set_num_threads`, called by every Loader when it is built and at each epoch, sets numba's
    threads and also `torch.set_num_threads(num_workers)` for the whole process: a Ray task that asked for one
    CPU then ran torch on four threads, and results computed after building a loader depended on its
    worker count. This keeps the numba part only; torch's threads stay as the process set them.
    """
    import numba
    from ffcv.pipeline.compiler import Compiler

    def set_num_threads(cls, n: int) -> None:
        cls.num_threads = n if n >= 1 else os.cpu_count() or 1
        numba.set_num_threads(cls.num_threads)

    Compiler.set_num_threads = classmethod(set_num_threads)


def stop_epoch(epoch) -> None:
    """End an FFCV epoch iteration (`ffcv.loader.epoch_iterator.EpochIterator`) its consumer left unfinished: no new
    batch is started, its thread exits, its memory is released.

    FFCV 1.0.2 stops an epoch's thread only when the iterator is garbage-collected, which never happens while the
    thread runs (the thread refers to it): an iterator dropped early (Lightning's `iter(loader)` check that a loader
    is iterable, before each fit) kept its thread waiting for a reader for the life of the process. That thread has
    run numba's parallel code, so numba's TBB threading layer could not shut its threads down at the process's next
    fork (Ray's start, a worker pool) and printed "Unable to join threads to shut down before fork()".
    """
    epoch.terminate_event.set()
    collections.deque(epoch.iter_ixes, maxlen=0)  # the thread finds no batch left after the one it is making
    while epoch.is_alive():  # its last put (the end marker, or a batch) waits for room in the queue: make it
        with contextlib.suppress(queue.Empty):
            epoch.output_queue.get(timeout=0.1)
    epoch.close()
