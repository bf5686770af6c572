"""Images per second of the FFCV train loader vs torchvision ImageFolder + PIL DataLoader, same images and work.

Both read the same synthetic JPEG images (one task's train split), apply the same train transform (resize the
shorter side to resolution * 256/224, random crop, random grayscale p = 0.2, normalise to mean 0.5 / std 0.5),
at the same resolution, batch size and worker count. One warm-up epoch (FFCV compiles, DataLoader starts its
workers) is not timed. Run by hand:

    .venv/bin/python -m benchmarks.bench_loader [--size 128 --resolution 112 --workers 2 --epochs 3]
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

import torch


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default=None, help="folder for images and .beton (default: a temporary folder)")
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--per-class", type=int, default=100, help="train images per class")
    parser.add_argument("--size", type=int, default=128, help="side of the generated images")
    parser.add_argument("--resolution", type=int, default=112, help="crop fed to the network")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs (after one warm-up epoch)")
    parser.add_argument("--write-mode", default="jpg", choices=("raw", "jpg", "proportion"))
    return parser.parse_args(argv)


def prepare(work: Path, args: argparse.Namespace) -> tuple[Path, Path]:
    """Synthetic face images (JPEG folders) and the .beton built from them; returns (image folder, beton)."""
    from data_pipeline.beton import ImageEncoding
    from data_pipeline.build import BuildSettings, ImageCounts, build_dataset
    from data_pipeline.synth import SynthSettings, generate

    generate(
        work / "images",
        SynthSettings(
            seed=0,
            tasks=("face",),
            classes_per_task=args.classes,
            train_per_class=args.per_class,
            test_per_class=1,
            heldout_classes=0,
            size=args.size,
        ),
        workers=args.workers,
    )
    build_dataset(
        {"face": work / "images" / "face"},
        work / f"data_{args.write_mode}",
        BuildSettings(
            counts=ImageCounts(test=1, val=1), encoding=ImageEncoding(write_mode=args.write_mode, max_resolution=None)
        ),
        workers=args.workers,
    )
    return work / "images" / "face" / "train", work / f"data_{args.write_mode}" / "face" / "train.beton"


def torchvision_loader(folder: Path, args: argparse.Namespace) -> torch.utils.data.DataLoader:
    """ImageFolder + PIL with the same train transform, shuffled, in `workers` processes."""
    from torchvision import datasets, transforms

    transform = transforms.Compose(
        [
            transforms.Resize(round(args.resolution * 256 / 224)),
            transforms.RandomCrop(args.resolution),
            transforms.RandomGrayscale(0.2),
            transforms.ToTensor(),
            transforms.Normalize([0.5] * 3, [0.5] * 3),
        ]
    )
    return torch.utils.data.DataLoader(
        datasets.ImageFolder(str(folder), transform=transform),
        shuffle=True,
        batch_size=args.batch_size,
        num_workers=args.workers,
        drop_last=True,
        persistent_workers=True,
    )


def images_per_second(loader: Iterable, epochs: int) -> float:
    """Throughput over `epochs` timed epochs, after one untimed warm-up epoch."""
    for _ in loader:
        pass
    count, start = 0, time.perf_counter()
    for _ in range(epochs):
        for images, _labels in loader:
            count += images.shape[0]
    return count / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    """Run both loaders and print their throughputs, the ratio and the command."""
    from data_pipeline.loaders import make_loader

    args = _parse(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        folder, beton = prepare(Path(args.work or tmp), args)
        ffcv = images_per_second(
            make_loader(
                beton, train=True, batch_size=args.batch_size, resolution=args.resolution, num_workers=args.workers
            ),
            args.epochs,
        )
        pil = images_per_second(torchvision_loader(folder, args), args.epochs)
    command = " ".join(["python -m benchmarks.bench_loader", *map(shlex.quote, sys.argv[1:] if argv is None else argv)])
    print(
        f"FFCV {ffcv:,.0f} img/s, torchvision ImageFolder+PIL {pil:,.0f} img/s, ratio {ffcv / pil:.2f}x "
        f"({args.classes * args.per_class} images {args.size} px -> {args.resolution} px, batch {args.batch_size}, "
        f"{args.workers} workers, FFCV write mode {args.write_mode}); command: {command}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
