"""`specialize demo`: the whole study, end to end, on the built-in synthetic data, at a size a laptop runs.

Stages (each resumes: rerunning the command skips what is finished):
  1. synthesise face and object image folders                      -> OUT/images
  2. build them into FFCV .beton files (train, val, test, held-out)  -> OUT/data
  3. train small Face, Object and Dual-task VGG16s                   -> OUT/train/<name>
  4. lesion sweep of the Dual-task network (Ray)                     -> OUT/lesion
  5. segregation index per layer with bootstrap CIs, and beside it
     the random-task control                                         -> OUT/segregation, OUT/segregation_random,
                                                                        OUT/figures/segregation_vs_control.png
  6. decoding of held-out classes by the three networks              -> OUT/decode
  7. RSA against synthetic participants who judge face identity      -> OUT/behaviour, OUT/rsa
  8. feature visualisation of each task's top conv5_3 filters        -> OUT/visualize
  9. one self-contained HTML report of it all                        -> OUT/report.html

Its default size (60 classes per task, 100 training and 30 test images per class, 48 px, 20 epochs) is chosen so that
the segregation index of conv4-5 has a 95% interval at most about 0.2 wide; it runs in about 10 minutes on two CPU
cores. Fewer classes widen the intervals: they resample classes first.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
TASKS = ("face", "object")
NETWORKS = {"face": "tiny_face", "object": "tiny_object", "dual": "tiny_face_object"}  # name -> training config
HELDOUT_CLASSES = 5
VISUALIZED_LAYER = "conv5_3"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `demo` subcommand."""
    parser = subparsers.add_parser(
        "demo", help="run the whole study on built-in synthetic data (resumable)", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--out", default="runs/demo", help="demo directory (default: %(default)s)")
    parser.add_argument("--classes", type=int, default=60, help="classes per task (default: %(default)s)")
    parser.add_argument(
        "--train-per-class",
        type=int,
        default=100,
        help="training images per class, a tenth of them set aside for validation (default: %(default)s)",
    )
    parser.add_argument("--test-per-class", type=int, default=30, help="test images per class (default: %(default)s)")
    parser.add_argument("--resolution", type=int, default=48, help="image side the networks see (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=20, help="training epochs (default: %(default)s)")
    parser.add_argument(
        "--images-per-task", type=int, default=400, help="lesion-sweep images per task (default: %(default)s)"
    )
    parser.add_argument(
        "--bootstraps", type=int, default=1000, help="bootstrap resamples for the CIs (default: %(default)s)"
    )
    parser.add_argument(
        "--visualize-steps",
        type=int,
        default=500,
        help="gradient-ascent steps of the feature visualisation (default: %(default)s)",
    )
    parser.set_defaults(run=run)


def make_data(out: Path, args: argparse.Namespace) -> Path:
    """Stages 1-2: synthetic image folders, then the FFCV data directory; returns the data directory."""
    from data_pipeline.build import ImageCounts, build_dataset
    from data_pipeline.synth import generate

    images, data = out / "images", out / "data"
    generate(
        images,
        seed=0,
        tasks=TASKS,
        classes_per_task=args.classes,
        train_per_class=args.train_per_class,
        test_per_class=args.test_per_class,
        heldout_classes=HELDOUT_CLASSES,
        size=max(64, args.resolution),
    )
    if not (data / "manifest.json").is_file():
        validation = max(1, args.train_per_class // 10)  # a tenth of each class's training images
        build_dataset(
            {task: images / task for task in TASKS},
            data,
            counts=ImageCounts(test=args.test_per_class, val=validation),
            heldout_classes=HELDOUT_CLASSES,
        )
    return data


def train_networks(out: Path, data: Path, args: argparse.Namespace) -> dict[str, Path]:
    """Stage 3: the Face, Object and Dual-task networks (the tiny configs at the demo's size); name -> run directory."""
    from lightning_modules.config import load_config
    from lightning_modules.train import train

    overrides = [
        f"data.dir={data}",
        f"output.root={out / 'train'}",
        "wandb.group=demo",
        f"data.resolution={args.resolution}",
        f"trainer.epochs={args.epochs}",
    ]
    return {
        name: train(load_config(REPO / "configs" / f"{config}.yaml", overrides)) for name, config in NETWORKS.items()
    }


def validation_accuracies(run_dir: Path) -> dict[str, float]:
    """Per-task validation top-1 (over all outputs) at the end of a run."""
    from common.io import read_json

    metrics = read_json(run_dir / "summary.json")["metrics"]
    return {
        key.split("/")[1]: value
        for key, value in metrics.items()
        if key.startswith("val/") and key.endswith("/top1") and key.count("/") == 2
    }


def segregate(out: Path, data: Path, dual: Path, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Stages 4-5: the sweep of the dual-task network's best checkpoint, segregation and the random-task control."""
    from analysis.segregation.run import run_segregation
    from analysis.segregation.settings import SegregationSettings
    from sweeps.distributed import run_sweep

    sweep = run_sweep(dual / "checkpoints" / "best.ckpt", data, out / "lesion", images_per_task=args.images_per_task)
    print(f"\nlesion sweep: {len(sweep.filter_losses)} (layer, filter, task) rows in {sweep.out_dir}")
    return {
        name: run_segregation(
            out / "lesion",
            out / name,
            data,
            SegregationSettings(n_bootstraps=args.bootstraps, random_tasks=random_tasks),
        )
        for name, random_tasks in (("segregation", False), ("segregation_random", True))
    }


def plot_against_control(out: Path) -> list[Path]:
    """OUT/figures/segregation_vs_control.png|svg: the dual-task network's segregation index per layer beside the
    random-task control's, each with its 95% band."""
    from analysis.figures import plot_segregation_by_layer
    from analysis.segregation.run import segregation_curves

    curves = segregation_curves(
        [f"{out / 'segregation'}=dual-task network", f"{out / 'segregation_random'}=random split of its classes"]
    )
    return plot_segregation_by_layer(
        curves,
        out / "figures" / "segregation_vs_control",
        title="Segregation of the dual-task network's filters (synthetic data)",
    )


def representations(out: Path, data: Path, runs: dict[str, Path], args: argparse.Namespace) -> None:
    """Stages 6-8: decoding of held-out classes, RSA against synthetic participants, feature visualisation."""
    from analysis.representations.activations import Network
    from analysis.representations.cli import format_decoding, format_rsa
    from analysis.representations.decoding import run_decoding
    from analysis.representations.rsa import run_rsa
    from analysis.representations.settings import RSASettings, VisualizeSettings
    from analysis.representations.visualize import run_visualize
    from data_pipeline.behaviour import write_stimulus_list
    from data_pipeline.synth_behaviour import generate_behaviour

    networks = [Network(name, run_dir / "checkpoints" / "best.ckpt") for name, run_dir in runs.items()]
    print("\n" + format_decoding(run_decoding(networks, data, out / "decode", progress=False)))
    faces = sorted((out / "images" / "face" / "heldout").rglob("*.jpg"))
    stimuli = write_stimulus_list(out / "stimuli.txt", [path for path in faces if int(path.stem) < 4])
    behaviour = generate_behaviour(out / "behaviour", stimuli, participants=14, noise=1.0, seed=0)
    rsa = run_rsa(networks, behaviour / "stimuli.txt", behaviour, out / "rsa", progress=False)
    print("\nRSA with 14 synthetic participants who judge face identity:\n" + format_rsa(rsa, RSASettings().comparison))
    run_visualize(
        networks[-1],
        VISUALIZED_LAYER,
        out / "visualize",
        top=4,
        tasks=TASKS,
        sweep_dir=out / "lesion",
        data_dir=data,
        settings=VisualizeSettings(steps=args.visualize_steps),
        progress=False,
    )


def format_segregation(summaries: dict[str, dict[str, Any]]) -> str:
    """The segregation index per layer with its CI, beside the random-task control's, and the dual-task network's
    intact test accuracy per task."""
    network, control = summaries["segregation"], summaries["segregation_random"]
    scope = network["default_scope"]
    [rows] = network["segregation_index"][scope].values()
    [random_rows] = control["segregation_index"][scope].values()
    lines = [
        f"segregation index, top {network['fraction']:.0%} lesions, {network['confidence_level']:.0%} CI "
        f"from {network['n_bootstraps']} resamples ({scope}):",
        f"  {'layer':<8} {'face vs object':>26}   {'random pseudo-tasks':>26}",
    ]
    for row, random_row in zip(rows, random_rows):
        lines.append(
            f"  {row['layer']:<8} {_interval(row['si'], row['low'], row['high']):>26}   "
            f"{_interval(random_row['si'], random_row['low'], random_row['high']):>26}"
        )
    intact = network["intact_accuracy"][scope]
    lines.append(
        "dual-task network, intact test top-1: "
        + ", ".join(
            f"{task} {_interval(value['accuracy'], value['low'], value['high'])}" for task, value in intact.items()
        )
    )
    return "\n".join(lines)


def _interval(value: float, low: float, high: float) -> str:
    return f"{value:+.3f} [{low:+.3f}, {high:+.3f}]"


def run(args: argparse.Namespace) -> int:
    """Run every stage, printing what each produced."""
    from analysis.report.build import write_report
    from common.ray_runner import ray_session

    out = Path(args.out)
    data = make_data(out, args)
    runs = train_networks(out, data, args)
    print("\nvalidation top-1 per task (best checkpoint's epoch is used below):")
    for name, run_dir in runs.items():
        accuracies = ", ".join(f"{task} {value:.3f}" for task, value in validation_accuracies(run_dir).items())
        print(f"  {name:8s} {accuracies}   ({run_dir})")
    with ray_session(None):  # one local Ray for every Ray stage, started after the stages that fork processes
        summaries = segregate(out, data, runs["dual"], args)
        print("\n" + format_segregation(summaries))
        print(f"figure: {plot_against_control(out)[0]}")
        representations(out, data, runs, args)
    print(f"\nfigures: {out / 'segregation' / 'figures'}")
    print(f"report: {write_report(out)}")
    return 0
