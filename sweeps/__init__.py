"""Lesion sweeps: the exact, fast lesion engine, the Ray-distributed sweep and greedy ranking.

`lesion_sweep` and `run_sweep` are loaded on first use, so importing `sweeps.cli` stays light.
"""

from __future__ import annotations

from typing import Any

__all__ = ["lesion_sweep", "lesioned", "run_sweep"]


def __getattr__(name: str) -> Any:
    if name in ("lesion_sweep", "lesioned"):
        from sweeps import lesion

        return getattr(lesion, name)
    if name == "run_sweep":
        from sweeps.distributed import run_sweep

        return run_sweep
    raise AttributeError(f"module 'sweeps' has no attribute {name!r}")
