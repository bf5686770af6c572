"""FFCV's .beton writer with its worker processes supervised: a worker that fails stops the write with its error.

FFCV 1.0.2's `DatasetWriter` waits for its workers by polling a shared sample counter, and workers hand pages
to the file in turn. A worker that raises (the disk fills up: ENOSPC) or is killed (out of memory) never
advances the counter nor its page, so the writer and the other workers wait forever and the build hangs.
`SupervisedDatasetWriter` runs each worker so that its exception comes back to the parent (no traceback from the
child), checks the workers while it waits, and on a failure stops them all, frees FFCV's shared memory and
raises the worker's error (an OSError keeps its errno, so a full disk reads as one). Imported lazily: it
imports FFCV.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import queue
import sys
from collections.abc import Callable, Iterable
from multiprocessing import Process, Queue, Value
from time import sleep
from typing import Any

from ffcv.memory_allocator import MemoryAllocator
from ffcv.writer import DatasetWriter
from tqdm import tqdm

POLL_SECONDS = 0.1


def _reporting_worker(work_fn: Callable, errors: multiprocessing.Queue, *args: Any) -> None:
    """Run an FFCV writer worker; on failure put its exception on `errors` and exit with code 1, quietly."""
    try:
        work_fn(*args)
    except BaseException as error:  # noqa: BLE001 - every failure must reach the parent, or it waits forever
        errors.put(error)
        sys.exit(1)


class WorkerFailed(RuntimeError):
    """An FFCV writer worker died without reporting an exception (killed by a signal, out of memory)."""


class SupervisedDatasetWriter(DatasetWriter):
    """`ffcv.writer.DatasetWriter` whose workers' failures are raised in the parent instead of hanging it."""

    def _write_common(
        self, num_samples: int, queue_content: Iterable, work_fn: Callable, extra_worker_args: tuple
    ) -> None:
        """FFCV's `_write_common` (same work queue, allocator and finalisation) with the workers supervised."""
        self.num_samples = num_samples
        self.prepare()  # the file's header; creates the shared memory freed below
        work: Queue = Queue()
        for todo in queue_content:
            work.put(todo)
        for _ in range(self.num_workers):
            work.put(None)
        allocations: Queue = Queue()
        errors: Queue = Queue()
        done = Value(ctypes.c_uint64, 0)
        allocator = MemoryAllocator(self.fname, self.data_region_start, self.page_size)
        worker_args = (
            work_fn,
            errors,
            work,
            self.metadata_sm,
            self.metadata_type,
            self.fields,
            allocator,
            done,
            allocations,
            *extra_worker_args,
        )
        processes = [Process(target=_reporting_worker, args=worker_args) for _ in range(self.num_workers)]
        try:
            for process in processes:
                process.start()
            self._wait_for_samples(processes, errors, done)
            allocation_list = [
                allocation
                for allocation_chunk in self._collect(processes, errors, allocations)
                for allocation in allocation_chunk
            ]
            self.finalize(allocation_list)
        finally:
            for process in processes:
                if process.is_alive():
                    process.terminate()
                process.join()
            self.metadata_sm.close()
            self.metadata_sm.unlink()

    def _wait_for_samples(self, processes: list[Process], errors: Queue, done: Any) -> None:
        """Show progress until every sample is written; raise as soon as a worker fails."""
        written = 0
        with tqdm(total=self.num_samples, disable=None) as progress:  # a disabled bar counts nothing
            while written != self.num_samples:
                _raise_failure(processes, errors)
                progress.update(done.value - written)
                written = done.value
                sleep(POLL_SECONDS)

    def _collect(self, processes: list[Process], errors: Queue, allocations: Queue) -> list[list]:
        """Each worker's memory allocations (sent when it has flushed its last page); raise if a worker fails."""
        collected: list[list] = []
        while len(collected) < len(processes):
            _raise_failure(processes, errors)
            try:
                collected.append(allocations.get(timeout=POLL_SECONDS))
            except queue.Empty:
                continue
        return collected


def _raise_failure(processes: list[Process], errors: Queue) -> None:
    """Raise the first exception a worker reported, or WorkerFailed when one died without reporting."""
    error = _reported(errors, timeout=None)
    dead = [process.exitcode for process in processes if process.exitcode not in (None, 0)]
    if error is None and dead:
        error = _reported(errors, timeout=1.0) or WorkerFailed(  # its report may still be in flight
            f"an FFCV writer worker died (exit code {dead[0]}); rerun to resume the build"
        )
    if error is not None:
        raise error


def _reported(errors: Queue, timeout: float | None) -> BaseException | None:
    """A worker's reported exception, waiting up to `timeout` seconds (None: not at all), or None."""
    try:
        return errors.get(timeout=timeout) if timeout else errors.get_nowait()
    except queue.Empty:
        return None
