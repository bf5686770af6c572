"""Suite-wide fixtures."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """Run torch on one thread, from the first fixture on (module-scoped ones included), so results do not depend on the
    machine's core count: tiny models gain nothing from two threads, and lose much when other work shares the CPUs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray (2 CPUs) shared by a module's tests, which the code under test joins (`ray_session` uses a
    running session); yields its address for subprocesses that join it. Shut down after the module, so that no
    Ray runs beside the tests of other modules. Request it after the fixtures that fork processes (data builds,
    synthetic images): a process forked beside a live Ray driver can deadlock."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()
