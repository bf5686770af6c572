"""Two fixes to FFCV 1.0.2 and numba 0.68 that every process building FFCV loaders needs; `install_ffcv_fixes`
applies both, once (`make_loader` calls it, so no loader is built without them).

They patch library classes for the whole process, so they are applied where loaders are built, never on
import: a process that only reads manifests or plots figures is left untouched.
"""

from __future__ import annotations

import functools
import os


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
