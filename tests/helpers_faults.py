"""Fault injection for the fault tests: kill -9 a command at chosen points, kill the Ray worker running a task, fill
the disk; and a check that every result file reads back whole."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import psutil
import pytest
import yaml

from common.io import readable_parquet
from data_pipeline.synth import SynthSettings, generate, is_whole_jpeg
from lightning_modules.checkpoint import is_complete_checkpoint

ROOT = Path(__file__).resolve().parent.parent


def tiny_synthetic_images(root: Path) -> Path:
    """Synthetic face and object folders under `root`: 2 classes each, 6 train and 2 test images per class, 32 px
    (seed 1): the smallest set a data build accepts."""
    settings = SynthSettings(
        seed=1,
        tasks=("face", "object"),
        classes_per_task=2,
        train_per_class=6,
        test_per_class=2,
        heldout_classes=0,
        size=32,
    )
    generate(root, settings, workers=1)
    return root


def specialize(*args: object) -> list[str]:
    """The command line of `specialize ARGS...` run by this interpreter from this checkout."""
    return [sys.executable, "-m", "specialize.cli", *map(str, args)]


def command_env(**extra: str) -> dict[str, str]:
    """The environment for a command under test: this checkout first on the path, W&B offline in its own service
    (a killed client leaves its run "in use" in a shared one), torch on one thread (as the tests), and `extra`."""
    env = {key: value for key, value in os.environ.items() if key != "WANDB_SERVICE"}
    return {
        **env,
        "PYTHONPATH": f"{ROOT}{os.pathsep}{env.get('PYTHONPATH', '')}",
        "WANDB_MODE": "offline",
        "OMP_NUM_THREADS": "1",
        **extra,
    }


def run_until(
    command: Sequence[str],
    ready: Callable[[], bool],
    timeout: float = 300,
    cwd: Path = ROOT,
    env: Mapping[str, str] | None = None,
) -> bool:
    """Run `command` in its own process group and SIGKILL the whole group (as a scheduler cancelling a job does)
    the moment `ready()` is true.

    True when it was killed; False when it finished first (it must then have succeeded).
    """
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(
            command,
            cwd=cwd,
            env=dict(env or command_env()),
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        deadline = time.monotonic() + timeout
        try:
            while process.poll() is None and time.monotonic() < deadline:
                if ready():
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
                    return True
                time.sleep(0.01)
            assert process.poll() is not None, f"{command} ran past {timeout} s"
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        stderr.seek(0)
        assert process.returncode == 0, stderr.read().decode(errors="replace")[-3000:]
    return False


# `specialize ARGS` with common.io's flush before the rename of an atomic write wrapped: the process group is killed
# with SIGKILL the moment the NTH file matching PATTERN is written whole but not yet renamed into place
_KILLED_WRITING = """
import os, signal, sys
import common.io
from specialize.cli import main
pattern, nth, written, flush = sys.argv[1], int(sys.argv[2]), [], common.io._flush_to_disk
def flush_or_die(tmp):
    flush(tmp)
    if (tmp.parent / tmp.name[1:].rsplit(".", 2)[0]).match(pattern):
        written.append(tmp)
        if len(written) == nth:
            os.killpg(0, signal.SIGKILL)
common.io._flush_to_disk = flush_or_die
sys.exit(main(sys.argv[3:]))
"""


def killed_writing(
    args: Sequence[object], pattern: str, nth: int = 1, timeout: float = 300, env: Mapping[str, str] | None = None
) -> None:
    """Run `specialize ARGS` and SIGKILL its process group at a chosen instant of a stage too short to hit by time:
    when its `nth` file matching `pattern` (`Path.match`, e.g. "units/*.parquet") is written to its temporary name
    but not yet renamed into place. The kill must land there: a command that ends otherwise fails the test."""
    result = subprocess.run(
        [sys.executable, "-c", _KILLED_WRITING, pattern, str(nth), *map(str, args)],
        cwd=ROOT,
        env=dict(env or command_env()),
        start_new_session=True,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == -signal.SIGKILL, f"not killed at {pattern} #{nth}: {result.stderr[-3000:]}"


def run_to_end(
    command: Sequence[str], timeout: float = 600, cwd: Path = ROOT, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run `command` to its end; it must succeed."""
    result = subprocess.run(
        command, cwd=cwd, env=dict(env or command_env()), capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def killed_after(delay: float) -> Callable[[], bool]:
    """A `ready` condition that holds `delay` seconds after it is made (made when the command starts)."""
    start = time.monotonic()
    return lambda: time.monotonic() - start >= delay


def count_at_least(pattern_root: Path, pattern: str, count: int) -> Callable[[], bool]:
    """A `ready` condition: at least `count` files match `pattern` under `pattern_root`."""
    return lambda: sum(1 for _ in pattern_root.glob(pattern)) >= count


def exists(path: Path) -> Callable[[], bool]:
    """A `ready` condition: `path` exists."""
    return path.exists


def rewritten(path: Path) -> Callable[[], bool]:
    """A `ready` condition: `path` exists and was (re)written after the condition was made."""
    before = path.stat().st_mtime_ns if path.exists() else None
    return lambda: path.exists() and path.stat().st_mtime_ns != before


def mtimes(paths: Iterable[Path]) -> dict[Path, int]:
    """Modification times (ns) of files."""
    return {path: path.stat().st_mtime_ns for path in paths}


def temporaries(root: Path) -> list[Path]:
    """Temporary files of `common.io.atomic_path` left under `root`."""
    return sorted(root.rglob(".*.tmp"))


def _whole_csv(path: Path) -> bool:
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    return bool(rows) and all(len(row) == len(rows[0]) for row in rows)


def _whole_beton(path: Path) -> bool:
    from ffcv.reader import Reader

    try:
        Reader(str(path))
    except Exception:  # noqa: BLE001 - any failure to open means damaged
        return False
    return True


WHOLE = {  # file suffix -> whether such a file reads back complete
    ".json": lambda path: json.loads(path.read_text()) is not None,
    ".yaml": lambda path: yaml.safe_load(path.read_text()) is not None,
    ".csv": _whole_csv,
    ".parquet": readable_parquet,
    ".ckpt": is_complete_checkpoint,
    ".png": lambda path: path.read_bytes().endswith(b"IEND\xaeB`\x82"),
    ".svg": lambda path: path.read_text().rstrip().endswith("</svg>"),
    ".jpg": lambda path: is_whole_jpeg(str(path)),
    ".beton": _whole_beton,
}
FOREIGN_FOLDERS = ("wandb", "ray_tune")  # written by W&B and Ray Tune themselves


def damaged_files(root: Path) -> list[Path]:
    """The result files under `root` that do not read back whole (temporaries and W&B's, Ray Tune's files aside)."""

    def damaged(path: Path) -> bool:
        try:
            return not WHOLE[path.suffix](path)
        except (ValueError, OSError, UnicodeDecodeError, yaml.YAMLError):
            return True

    return sorted(
        path
        for path in root.rglob("*")
        if path.suffix in WHOLE
        and not path.name.startswith(".")
        and not set(FOREIGN_FOLDERS) & set(path.relative_to(root).parts)
        and damaged(path)
    )


@contextlib.contextmanager
def small_disk(root: Path, size: str = "256m") -> Iterator[Path]:
    """A real file system that fills up: a tmpfs of `size` mounted at `root` for the block (root only; the test
    fails where mounting is not allowed: it is marked `root`)."""
    root.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(root)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.fail(
            f"cannot mount a tmpfs ({mounted.stderr.strip()}); the full-disk tests need root "
            "(they are marked root: deselect them with -m 'not root')"
        )
    try:
        yield root
    finally:
        subprocess.run(["umount", "--lazy", str(root)], check=True)


def fill(disk: Path, leave: int) -> Path:
    """Fill `disk` with a ballast file so that only about `leave` bytes stay free; delete the file to free them."""
    ballast = disk / "ballast"
    with open(ballast, "wb") as handle:
        os.posix_fallocate(handle.fileno(), 0, max(4096, shutil.disk_usage(disk).free - leave))
    return ballast


def on_disk_bytes(paths: Iterable[Path]) -> int:
    """Space the files take on a file system of 4 KiB blocks."""
    return sum(-(-path.stat().st_size // 4096) * 4096 for path in paths)


def own_processes_with(marker: str) -> list[psutil.Process]:
    """This test's processes (descendants of this one, such as the workers of the Ray it started) whose command line
    mentions `marker` (a Ray worker's title names its task, e.g. `ray::run_chunk`); other tests' processes, run at the
    same time by another pytest-xdist worker, are not among them."""
    found = []
    for process in psutil.Process().children(recursive=True):
        try:
            if any(marker in part for part in process.cmdline()):
                found.append(process)
        except psutil.Error:
            continue
    return found


def kill_first_process(marker: str, stop: threading.Event) -> int | None:
    """SIGKILL the first of `own_processes_with(marker)`; its pid, or None if `stop` was set first."""
    while not stop.is_set():
        for process in own_processes_with(marker):
            os.kill(process.pid, signal.SIGKILL)
            return process.pid
        time.sleep(0.01)
    return None
