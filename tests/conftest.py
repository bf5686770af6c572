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
