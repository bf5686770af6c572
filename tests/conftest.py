"""Suite-wide fixtures."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

# FFCV compiles every loader's pipeline with numba: about 10 s of CPU per process that loads data (FFCV's import alone
# compiles for 4 s), and the suite starts hundreds of such processes (commands, Ray workers, Slurm jobs, DDP ranks).
# The suite runs the pipelines uncompiled instead (numba's documented switch, inherited by every process it starts):
# the same Python code, and the same batches, bit for bit, as
# test_data_loaders::test_compiled_pipelines_give_the_batches_of_the_uncompiled_ones checks; tests marked `jit` run
# compiled; `NUMBA_DISABLE_JIT=0 make test` runs everything compiled, as users do (slower). Nothing may import numba
# before this line: pyproject.toml's warning filters name no numba class, as pytest imports those before this file.
os.environ.setdefault("NUMBA_DISABLE_JIT", "1")
# Uncompiled, the seeded draws' uint64 arithmetic (data_pipeline.augment.splitmix64) wraps around on numpy scalars,
# which warn where compiled code does not; the wrap-around is the intended arithmetic.
UINT64_WRAP_WARNING = "ignore:overflow encountered in scalar:RuntimeWarning"
os.environ["PYTHONWARNINGS"] = ",".join(filter(None, [os.environ.get("PYTHONWARNINGS"), UINT64_WRAP_WARNING]))


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """Run torch on one thread, from the first fixture on (module-scoped ones included), so results do not depend on the
    machine's core count: tiny models gain nothing from two threads, and lose much when other work shares the CPUs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def face_network(tmp_path_factory):
    """A tiny VGG16 trained on the generated face task (helpers_analysis.train_single_task, 12 epochs), trained once
    per session for the modules that read it (the known-answer segregation tests, feature visualisation); in eval
    mode; nothing may change it."""
    from helpers_analysis import bias_free_vgg16, train_single_task
    from helpers_data import built_once_per_session

    def train_and_save(folder: Path) -> Path:
        folder.mkdir(parents=True)
        torch.save(train_single_task("face").state_dict(), folder / "face.pt")
        return folder / "face.pt"

    weights = built_once_per_session(tmp_path_factory, "face_network", train_and_save)
    model = bias_free_vgg16()
    model.load_state_dict(torch.load(weights, weights_only=True))
    return model.eval()


@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray (2 CPUs) shared by a module's tests, which the code under test joins (`ray_session` uses a
    running session); yields its address for subprocesses that join it. Shut down after the module, so that no
    Ray runs beside the tests of other modules. Request it after the fixtures that fork processes (data builds,
    synthetic images): a process forked beside a live Ray driver can deadlock."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


# What a test needs, from the fixtures it uses (`pytest -m "not chromium"` and so on; pyproject.toml lists the
# markers); modules that start Ray or Slurm through the command line mark themselves.
FIXTURE_MARKS = {"ray_cluster": "ray"}


# The modules that take longest (minutes each), longest first. `make test` runs the suite on two pytest-xdist
# workers (`-n 2 --dist loadfile --no-loadscope-reorder`), a module at a time per worker (its module-scoped fixtures
# built once, on one worker), in this file's order: these start first, so that no long module is left to run alone at
# the end. (Not `--dist loadgroup`: pytest-xdist 3.8 writes the groups into test ids that pytest 9.2 no longer reads,
# so it spread a module's tests over both workers, each building the module's fixtures.)
LONGEST_MODULES = (
    "test_study.py",
    "test_cluster_slurm.py",
    "test_faults_ray.py",
    "test_demo.py",
    "test_faults_analyses.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test by what its fixtures start, and put the longest modules first."""
    for item in items:
        for fixture, mark in FIXTURE_MARKS.items():
            if fixture in getattr(item, "fixturenames", ()):
                item.add_marker(mark)
    rank = {name: index for index, name in enumerate(LONGEST_MODULES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Any:
    """A skipped test fails: what cannot run here (no Slurm, no root, no browser) must say so in CI, not pass
    unseen. Deselect such tests by their marker instead (`-m "not slurm"`)."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped, which this suite does not allow (deselect by marker instead): {report.longrepr}"


@pytest.fixture(scope="module", autouse=True)
def no_wandb_service_beyond_its_module():
    """End a W&B service (and its client threads) that a module's in-process runs started in this process, as Ray's
    is ended: a process forked beside live threads can deadlock (a data build of a later module hung so)."""
    yield
    if "wandb" in sys.modules:
        sys.modules["wandb"].teardown()
