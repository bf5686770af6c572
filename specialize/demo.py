"""`specialize demo`: the whole study, end to end, on the built-in synthetic data, at a size a laptop runs.

Stages (each resumes: rerunning the command skips what is finished):
  1. synthesise face and object image folders        -> OUT/images
  2. build them into FFCV .beton files                -> OUT/data
  3. train tiny Face, Object and Dual-task VGG16s     -> OUT/train/<name>
  4. lesion sweep of the Dual-task network via Ray    -> OUT/lesion
  5. segregation index per layer with bootstrap CIs   -> OUT/segregation
  6. one self-contained HTML report of it all         -> OUT/report.html
"""

from __future__ import annotations

import argparse
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TASKS = ("face", "object")
TRAIN_CONFIGS = ("tiny_face", "tiny_object", "tiny_face_object")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `demo` subcommand."""
    parser = subparsers.add_parser("demo", help="run the whole study on built-in synthetic data (resumable)",
                                   description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/demo", help="demo directory (default: %(default)s)")
    parser.add_argument("--classes", type=int, default=10, help="classes per task (default: %(default)s)")
    parser.add_argument("--train-per-class", type=int, default=100,
                        help="training images per class, a tenth of them set aside for validation")
    parser.add_argument("--test-per-class", type=int, default=20, help="test images per class")
    parser.add_argument("--epochs", type=int, help="training epochs (default: the tiny configs' own)")
    parser.add_argument("--images-per-task", type=int, default=400, help="lesion-sweep images per task")
    parser.add_argument("--bootstraps", type=int, default=1000, help="bootstrap resamples for the CIs")
    parser.set_defaults(run=run)


def make_data(out: Path, args: argparse.Namespace) -> Path:
    """Stages 1-2: synthetic image folders, then the FFCV data directory; returns the data directory."""
    from data_pipeline.build import ImageCounts, build_dataset
    from data_pipeline.synth import generate

    images, data = out / "images", out / "data"
    generate(images, seed=0, tasks=TASKS, classes_per_task=args.classes, train_per_class=args.train_per_class,
             test_per_class=args.test_per_class, heldout_classes=5, size=48)
    if not (data / "manifest.json").is_file():
        validation = max(1, args.train_per_class // 10)  # a tenth of each class's training images
        build_dataset({task: images / task for task in TASKS}, data,
                      counts=ImageCounts(test=args.test_per_class, val=validation), heldout_classes=5)
    return data


def train_networks(out: Path, data: Path, epochs: int | None) -> dict[str, Path]:
    """Stage 3: the tiny Face, Object and Dual-task networks; returns name -> run directory."""
    from lightning_modules.config import load_config
    from lightning_modules.train import train

    overrides = [f"data.dir={data}", f"output.root={out / 'train'}", "wandb.group=demo"]
    if epochs is not None:
        overrides.append(f"trainer.epochs={epochs}")
    return {name: train(load_config(REPO / "configs" / f"{name}.yaml", overrides)) for name in TRAIN_CONFIGS}


def validation_accuracies(run_dir: Path) -> dict[str, float]:
    """Per-task validation top-1 (over all outputs) at the end of a run."""
    from common.io import read_json

    metrics = read_json(run_dir / "summary.json")["metrics"]
    return {key.split("/")[1]: value for key, value in metrics.items()
            if key.startswith("val/") and key.endswith("/top1") and key.count("/") == 2}


def run(args: argparse.Namespace) -> int:
    """Run every stage, printing what each produced."""
    from analysis.cli import format_summary
    from analysis.report.build import write_report
    from analysis.segregation import SegregationSettings, run_segregation
    from common.ray_runner import ray_session
    from sweeps.distributed import run_sweep

    out = Path(args.out)
    data = make_data(out, args)
    runs = train_networks(out, data, args.epochs)
    print("\nvalidation top-1 per task:")
    for name, run_dir in runs.items():
        accuracies = ", ".join(f"{task} {value:.3f}" for task, value in validation_accuracies(run_dir).items())
        print(f"  {name:18s} {accuracies}   ({run_dir})")
    dual = runs["tiny_face_object"]
    with ray_session(None):  # one local Ray for both Ray stages, started after the stages that fork processes
        sweep = run_sweep(dual / "checkpoints" / "last.ckpt", data, out / "lesion", images_per_task=args.images_per_task)
        print(f"\nlesion sweep: {len(sweep.filter_losses)} (layer, filter, task) rows in {sweep.out_dir}")
        summary = run_segregation(out / "lesion", out / "segregation", data,
                                  SegregationSettings(n_bootstraps=args.bootstraps))
    print("\n" + format_summary(summary))
    print(f"\nfigures: {out / 'segregation' / 'figures'}")
    print(f"report: {write_report(out)}")
    return 0
