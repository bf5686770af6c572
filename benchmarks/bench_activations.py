"""Throughput of activation extraction against a plain forward pass of the same network, and its peak memory.

Paper scale by default: VGG16 at full width, 224 px, a held-out set of 100 classes x 50 images (5,000 images) on a
GPU; on a CPU the default is 128 of those images (rates and memory are per batch, so the count only sets the
run time: about an hour per pass over 5,000 images on two busy cores).
Images are generated batch by batch (seeded), so the comparison measures what extraction adds to the forward
pass (taking the layers, pooling, casting, writing the NPY files) and not the loader, which has its own
benchmark. Three extractions are timed: fc7 (decoding's default), all 16 layers averaged over space, and the
whole conv5_3 maps in float16. Runs are interleaved and repeated, and the best time counts (the machine may be
shared). Each reports images/s, its ratio to the plain forward pass, peak memory above the start (CUDA
allocator peak on a GPU, sampled RSS on the CPU) and the bytes written.

    python -m benchmarks.bench_activations [--images N] [--resolution 224] [--width 1.0] [--device cpu]
        [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from analysis.representations.activations import write_activations
from analysis.representations.settings import ActivationSettings
from benchmarks.peak_memory import PeakMemory
from lightning_modules.layer_names import LAYER_NAMES
from lightning_modules.vgg import vgg16

CONFIGS = {
    "fc7": ActivationSettings(layers=("fc7",), pooling="mean"),
    "all_layers_mean": ActivationSettings(layers=LAYER_NAMES, pooling="mean"),
    "conv5_3_full_float16": ActivationSettings(layers=("conv5_3",), pooling="full", dtype="float16"),
}


class GeneratedImages:
    """`count` seeded random images, made batch by batch (nothing held beyond one batch)."""

    name = "generated"

    def __init__(self, count: int, classes: int):
        self.images, self.classes = count, classes

    def count(self) -> int:
        return self.images

    def label_names(self) -> list[str]:
        return [f"class_{i:03d}" for i in range(self.classes)]

    def batches(self, resolution: int, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        generator = torch.Generator().manual_seed(0)
        for start in range(0, self.images, batch_size):
            size = min(batch_size, self.images - start)
            yield (
                torch.rand(size, 3, resolution, resolution, generator=generator) * 2 - 1,
                torch.arange(start, start + size) % self.classes,
            )

    def identity(self) -> dict:
        return {"images": self.images}


def plain_forward(
    model: torch.nn.Module, images: GeneratedImages, resolution: int, batch_size: int, device: torch.device
) -> float:
    """Seconds for the forward pass of every image (same batches, nothing kept)."""
    start = time.perf_counter()
    with torch.inference_mode():
        for batch, _ in images.batches(resolution, batch_size):
            model(batch.to(device))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--images", type=int, help="held-out images (default: 5000 = 100 classes x 50 on a GPU, 128 on a CPU)"
    )
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=2, help="timings per configuration; the best counts")
    args = parser.parse_args()

    device = torch.device(args.device)
    args.images = args.images or (5000 if device.type == "cuda" else 128)
    torch.manual_seed(0)
    model = vgg16(2137, width=args.width).eval().to(device)
    images = GeneratedImages(args.images, args.classes)
    plain_forward(model, GeneratedImages(args.batch_size, 1), args.resolution, args.batch_size, device)  # warm-up
    seconds: dict[str, float] = {}
    peaks: dict[str, int] = {}
    written: dict[str, int] = {}
    for _ in range(args.repeats):  # interleaved, best of the repeats: fair on a machine shared with other work
        with PeakMemory(device) as peak:
            best = min(
                seconds.get("plain_forward", float("inf")),
                plain_forward(model, images, args.resolution, args.batch_size, device),
            )
        seconds["plain_forward"], peaks["plain_forward"] = best, max(peaks.get("plain_forward", 0), peak.peak_bytes)
        for name, settings in CONFIGS.items():
            settings = ActivationSettings(
                layers=settings.layers, pooling=settings.pooling, dtype=settings.dtype, batch_size=args.batch_size
            )
            with tempfile.TemporaryDirectory() as out, PeakMemory(device) as peak:
                start = time.perf_counter()
                write_activations(model, images, args.resolution, Path(out), settings, device)
                seconds[name] = min(seconds.get(name, float("inf")), time.perf_counter() - start)
                written[name] = sum(path.stat().st_size for path in Path(out).iterdir())
            peaks[name] = max(peaks.get(name, 0), peak.peak_bytes)
    report = {"config": vars(args) | {"threads": torch.get_num_threads()}}
    for name, best in seconds.items():
        report[name] = {
            "images_per_s": round(args.images / best, 2),
            "ratio_to_plain": round(seconds["plain_forward"] / best, 3),
            "peak_memory_mib": round(peaks[name] / 2**20, 1),
        }
        if name in written:
            report[name]["written_mib"] = round(written[name] / 2**20, 1)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
