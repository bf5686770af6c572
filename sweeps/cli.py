"""`specialize lesion`: the per-filter lesion sweep of a trained network, distributed with Ray."""

from __future__ import annotations

import argparse

from common.ray_runner import Resources, add_ray_arguments
from common.wandb_runs import add_wandb_arguments
from sweeps.settings import RANKINGS, SweepSettings


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `lesion` subcommand."""
    parser = subparsers.add_parser(
        "lesion",
        help="lesion every conv filter of a trained network and rank filters per task",
        description="Lesion each conv filter (output map set to 0 after its ReLU), measure the loss on a fixed set "
        "of training images of every task, and rank filters per layer and task. Resumable: rerun the "
        "same command to continue a killed sweep.",
    )
    parser.add_argument("--checkpoint", required=True, help="a .ckpt written by `specialize train`")
    parser.add_argument("--data", required=True, help="the data directory the model was trained on")
    parser.add_argument("--out", required=True, help="output directory (resumes the sweep already there)")
    defaults = SweepSettings()
    parser.add_argument(
        "--images-per-task",
        type=int,
        default=defaults.images_per_task,
        help="training-split images per task, eval transform (default: %(default)s)",
    )
    parser.add_argument(
        "--seed", type=int, default=defaults.seed, help="seed of the image sample (default: %(default)s)"
    )
    parser.add_argument(
        "--ranking",
        default=defaults.ranking,
        help=f"{' or '.join(RANKINGS)}: each filter alone, or METHOD's rounds of 1.6%% up to --greedy-target "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--greedy-target",
        type=float,
        default=defaults.greedy_target,
        help="greedy: the fraction of each layer the rounds choose; `specialize segregation` refuses larger "
        "fractions (default: %(default)s, METHOD's 20%%)",
    )
    parser.add_argument(
        "--layers",
        nargs="+",
        metavar="UNIT",
        help="lesion units to sweep, named as the network's (VGG16: conv1_1 ... conv5_3; ResNet: conv1, "
        "layer1.0.conv1, layer1.0, ...) (default: every unit)",
    )
    add_ray_arguments(parser)
    parser.add_argument(
        "--filters-per-task",
        type=int,
        default=defaults.filters_per_task,
        help="filters per Ray task (default: %(default)s)",
    )
    parser.add_argument("--batch-size", type=int, help="images per forward pass (default: 128, or fewer to fit memory)")
    parser.add_argument("--lesions-per-pass", type=int, help="lesions folded into one pass (default: fit memory)")
    parser.add_argument(
        "--memory-budget-gb", type=float, help="memory per task in GiB (default: half of the free memory a task sees)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_wandb_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run (or resume) the sweep and print where the results are."""
    from sweeps.distributed import run_sweep

    budget = None if args.memory_budget_gb is None else int(args.memory_budget_gb * 2**30)
    defaults = SweepSettings()
    settings = SweepSettings(
        images_per_task=args.images_per_task,
        seed=args.seed,
        layers=tuple(args.layers) if args.layers else defaults.layers,
        ranking=args.ranking,
        greedy_target=args.greedy_target,
        filters_per_task=args.filters_per_task,
        batch_size=args.batch_size,
        lesions_per_pass=args.lesions_per_pass,
        memory_budget=budget,
        resources=Resources.from_args(args),
    )
    result = run_sweep(args.checkpoint, args.data, args.out, settings, args.address, progress=not args.no_progress)
    print(
        f"lesion sweep: {len(result.filter_losses)} rows -> {result.out_dir / 'filter_losses.parquet'}, "
        f"{result.out_dir / 'ranking.parquet'}"
    )
    return 0
