"""Throughput of the Ray-distributed lesion sweep with 1 and then 2 workers (target: 2 workers >= 1.6x).

Each run gets a fresh local Ray session with as many CPUs as workers (one CPU and one torch thread per task)
and a warm-up sweep, so worker start-up is not timed. The two runs must give identical tables.

    python -m benchmarks.bench_ray_scaling [--width 0.25] [--resolution 64] [--images-per-task 16]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import pandas as pd
import ray
import torch

from benchmarks.bench_lesion import random_tasks
from lightning_modules.layer_names import CONV_LAYERS
from lightning_modules.vgg import filters_per_layer, vgg16
from sweeps.distributed import distributed_sweep
from sweeps.settings import SweepSettings


def timed_sweep(
    workers: int, model: torch.nn.Module, data: dict, settings: SweepSettings, root: Path
) -> tuple[float, pd.DataFrame]:
    """Seconds for a full sweep on a fresh local Ray session with `workers` CPUs, and its table."""
    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    try:
        warm = SweepSettings(
            layers=("conv5_3",),
            filters_per_task=settings.filters_per_task,
            lesions_per_pass=settings.lesions_per_pass,
            batch_size=settings.batch_size,
            memory_budget=settings.memory_budget,
        )
        distributed_sweep(model, data, root / f"warmup_{workers}", warm, progress=False)
        start = time.perf_counter()
        table, _ = distributed_sweep(model, data, root / f"sweep_{workers}", settings, progress=False)
        return time.perf_counter() - start, table
    finally:
        ray.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--images-per-task", type=int, default=16)
    parser.add_argument("--filters-per-task", type=int, default=16)
    parser.add_argument("--layers", nargs="+", default=list(CONV_LAYERS))
    args = parser.parse_args()

    torch.manual_seed(0)
    model = vgg16(20, width=args.width).eval()
    data = random_tasks(args.images_per_task, args.resolution, 20)
    settings = SweepSettings(layers=tuple(args.layers), filters_per_task=args.filters_per_task, memory_budget=2 * 2**30)
    lesions = sum(filters_per_layer(model)[layer] for layer in args.layers) * 2 * args.images_per_task
    with tempfile.TemporaryDirectory() as root:
        seconds, tables = {}, {}
        for workers in (1, 2):
            seconds[workers], tables[workers] = timed_sweep(workers, model, data, settings, Path(root))
    rates = {workers: lesions / s for workers, s in seconds.items()}
    print(
        json.dumps(
            {
                "config": vars(args),
                "seconds": {f"{w}_workers": round(s, 2) for w, s in seconds.items()},
                "lesion_images_per_s": {f"{w}_workers": round(r, 1) for w, r in rates.items()},
                "scaling_2_over_1": round(rates[2] / rates[1], 2),
                "identical_tables": tables[1].equals(tables[2]),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
