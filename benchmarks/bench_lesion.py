"""Throughput of `lesion_sweep` against the naive reference (one full forward pass per filter).

Any architecture of the registry (`--arch`, default VGG16) at width 1/4, 64 px, every lesion unit, random images in
two tasks. The naive reference is timed on
a sample of filters per layer (its cost per filter is the same in every layer); the fast sweep runs every
filter. Reports lesions x images per second for both, the speedup (target >= 3x; also in CPU seconds of the
process, which other work on a shared machine disturbs less than wall time), the largest difference
in loss on the shared filters, peak memory, the multiply-adds of the sweep (METHOD's cost model: naive,
prefix reused, prefix reused + linearity of the next map) and the achieved fraction of the multiply-add
bound: the sweep's multiply-adds over its time, relative to the machine's measured float32 GEMM rate.

    python -m benchmarks.bench_lesion [--arch resnet18] [--images-per-task 32] [--naive-filters 4] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch import nn

from benchmarks.peak_memory import PeakMemory
from lightning_modules.architectures import ARCHITECTURES, build_network
from lightning_modules.units import filters_per_unit
from sweeps.cost_model import module_macs
from sweeps.engine import lesion_sweep
from sweeps.layer_split import split_at
from sweeps.reference import reference_lesion_sweep


def sweep_macs(model: nn.Module, image_shape: tuple[int, ...]) -> dict[str, float]:
    """Multiply-adds per image of a sweep lesioning every filter alone: naive (a full forward pass per filter),
    with the prefix reused, and with the prefix reused plus the next linear map's change from one channel (where the
    unit has that shortcut; a plain suffix pass elsewhere)."""
    macs = module_macs(model, image_shape)
    forward = sum(macs.values())
    naive = reuse = linear = 0.0
    for layer, filters in filters_per_unit(model).items():
        split = split_at(model, layer)
        rest = sum(macs[module] for module in split.suffix_modules() if module in macs)
        next_map = macs[split.linear] if split.shortcut else 0
        prefix = forward - next_map - rest
        naive += filters * forward
        reuse += prefix + filters * (next_map + rest)
        linear += prefix + next_map + filters * (next_map / filters + rest)
    return {"naive": naive, "prefix_reuse": reuse, "prefix_reuse_and_linearity": linear, "forward": forward}


def gemm_gmacs(device: str, size: int = 2048, repeats: int = 5) -> float:
    """Measured float32 matrix-multiply throughput in GMAC/s: the machine's practical multiply-add peak."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    torch.mm(a, b)
    start = time.perf_counter()
    for _ in range(repeats):
        torch.mm(a, b)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return repeats * size**3 / (time.perf_counter() - start) / 1e9


def random_tasks(images_per_task: int, resolution: int, num_classes: int) -> dict:
    generator = torch.Generator().manual_seed(0)
    half = num_classes // 2
    return {
        task: (
            torch.randn(images_per_task, 3, resolution, resolution, generator=generator),
            torch.randint(0, half, (images_per_task,), generator=generator) + offset,
        )
        for task, offset in (("face", 0), ("object", half))
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="vgg16", choices=ARCHITECTURES)
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--images-per-task", type=int, default=32)
    parser.add_argument("--naive-filters", type=int, default=4, help="filters per layer timed with the naive reference")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=None)
    args = parser.parse_args()

    torch.manual_seed(0)
    model = build_network(args.arch, 20, width=args.width).eval()
    data = random_tasks(args.images_per_task, args.resolution, 20)
    images = 2 * args.images_per_task
    sample = {layer: list(range(min(args.naive_filters, n))) for layer, n in filters_per_unit(model).items()}

    start, start_cpu = time.perf_counter(), time.process_time()
    naive = reference_lesion_sweep(model, data, batch_size=args.batch_size or 128, device=args.device, filters=sample)
    naive_s, naive_cpu_s = time.perf_counter() - start, time.process_time() - start_cpu
    start, start_cpu = time.perf_counter(), time.process_time()
    with PeakMemory(torch.device(args.device)) as peak:
        fast = lesion_sweep(model, data, batch_size=args.batch_size, device=args.device)
    fast_s, fast_cpu_s = time.perf_counter() - start, time.process_time() - start_cpu

    naive_lesions, fast_lesions = sum(map(len, sample.values())), sum(filters_per_unit(model).values())
    shared = fast.merge(naive, on=["layer", "filter", "task"], suffixes=("", "_naive"))
    costs = sweep_macs(model, (3, args.resolution, args.resolution))
    naive_rate = naive_lesions * images / naive_s
    fast_rate = fast_lesions * images / fast_s
    mac_ratio = costs["naive"] / costs["prefix_reuse_and_linearity"]
    fast_gmacs = costs["prefix_reuse_and_linearity"] * images / fast_s / 1e9
    peak_gmacs = gemm_gmacs(args.device)
    report = {
        "config": vars(args) | {"filters": fast_lesions, "images": images, "threads": torch.get_num_threads()},
        "naive_lesion_images_per_s": round(naive_rate, 1),
        "fast_lesion_images_per_s": round(fast_rate, 1),
        "speedup": round(fast_rate / naive_rate, 2),
        # the same in CPU seconds of this process (all its threads): what other work on a shared machine disturbs less
        "speedup_cpu_time": round((naive_cpu_s / naive_lesions) / (fast_cpu_s / fast_lesions), 2),
        "naive_s": round(naive_s, 1),
        "fast_s": round(fast_s, 1),
        "max_abs_loss_difference": float((shared.loss - shared.loss_naive).abs().max()),
        "accuracy_identical": bool((shared.accuracy == shared.accuracy_naive).all()),
        "peak_memory_mib": round(peak.peak_bytes / 2**20, 1),
        "memory_budget_mib": round(fast.attrs["memory_budget_bytes"] / 2**20, 1),
        "gmac_per_image_forward": round(costs["forward"] / 1e9, 4),
        "mac_ratio_prefix_reuse": round(costs["naive"] / costs["prefix_reuse"], 2),
        "mac_ratio_prefix_reuse_and_linearity": round(mac_ratio, 2),
        "sweep_gmac": round(costs["prefix_reuse_and_linearity"] * images / 1e9, 1),
        "naive_gmac_per_s": round(costs["forward"] * naive_rate / 1e9, 2),
        "fast_gmac_per_s": round(fast_gmacs, 2),
        "gemm_peak_gmac_per_s": round(peak_gmacs, 2),
        "fraction_of_mac_bound": round(fast_gmacs / peak_gmacs, 3),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
