"""`specialize activations`, `decode`, `rsa` and `visualize`: the representation analyses of trained networks.

Option values are checked by the settings dataclasses (`analysis.representations.settings`), so a bad layer,
classifier or distance is one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from analysis.representations.settings import (
    ACTIVATION_DTYPES,
    CLASSIFIERS,
    COMPARISONS,
    DISTANCES,
    ERROR_BARS,
    POOLINGS,
    ActivationSettings,
    DecodingSettings,
    RSASettings,
    VisualizeSettings,
)
from common.ray_runner import Resources, add_ray_arguments
from common.wandb_runs import add_wandb_arguments
from lightning_modules.layer_names import LAYER_KEYWORDS, LAYER_NAMES

if TYPE_CHECKING:
    import pandas as pd

LAYER_HELP = (
    f"the network's layers: VGG16's {', '.join(LAYER_NAMES)}; another network's units by module path and its "
    "hidden fc layers and output (e.g. ResNet-18's layer3.1, layer4.1, output; README, Architectures); or "
    + "; ".join(f"{keyword}: {meaning}" for keyword, meaning in LAYER_KEYWORDS.items())
)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `activations`, `decode`, `rsa` and `visualize` subcommands."""
    _register_activations(subparsers)
    _register_decode(subparsers)
    _register_rsa(subparsers)
    _register_visualize(subparsers)


def _add_networks(parser: argparse.ArgumentParser, many: bool = True) -> None:
    parser.add_argument(
        "--checkpoint",
        required=True,
        action="append" if many else "store",
        metavar="[NAME=]CKPT",
        help="a .ckpt written by `specialize train`"
        + (", repeatable; NAME labels it (default: its run directory's name)" if many else ""),
    )


def _add_extraction(parser: argparse.ArgumentParser, defaults: ActivationSettings) -> None:
    """Options of the activation extraction every analysis runs, with the analysis' defaults."""
    layers = defaults.layers
    parser.add_argument(
        "--layers",
        "--layer",
        nargs="+",
        default=list(layers),
        metavar="LAYER",
        help=f"{LAYER_HELP} (default: {' '.join(layers)})",
    )
    parser.add_argument(
        "--pooling",
        default=defaults.pooling,
        help=f"conv maps: {' or '.join(POOLINGS)} (averaged over space, or whole) (default: %(default)s)",
    )
    parser.add_argument(
        "--dtype",
        default=defaults.dtype,
        help=f"stored activations: {' or '.join(ACTIVATION_DTYPES)} (default: %(default)s)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=defaults.batch_size, help="images per forward pass (default: %(default)s)"
    )
    parser.add_argument("--out", required=True, help="output directory (resumes the job already there)")
    add_ray_arguments(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def extraction_settings(args: argparse.Namespace) -> ActivationSettings:
    """The extraction options as settings (keywords among the layers are resolved for the networks analysed)."""
    return ActivationSettings(
        layers=tuple(args.layers),
        pooling=args.pooling,
        dtype=args.dtype,
        batch_size=args.batch_size,
        resources=Resources.from_args(args),
    )


def networks_of(args: argparse.Namespace) -> list:
    """The --checkpoint values as named networks."""
    from analysis.representations.activations import parse_network

    specs = args.checkpoint if isinstance(args.checkpoint, list) else [args.checkpoint]
    return [parse_network(spec) for spec in specs]


# ---------------------------------------------------------------------------------------- activations


def _register_activations(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "activations",
        help="extract named layers' activations of networks for a data split or a stimulus list",
        description="Stream the images of a data directory's split (eval transform, file order) or of a stimulus "
        "list through each network and write every chosen layer's activations as NPY "
        "(OUT/<network>/<image set>/<layer>.npy, with images.parquet). Conv layers and fc6/fc7 are "
        "taken after their ReLU, output is the logits. One Ray task per network and image set; "
        "resumable.",
    )
    _add_networks(parser)
    parser.add_argument("--data", help="a built data directory (with --split and --tasks)")
    parser.add_argument("--split", default="heldout", help="train, test or heldout (default: %(default)s)")
    parser.add_argument("--tasks", help="comma-separated tasks (default: every task of the data with that split)")
    parser.add_argument("--stimuli", help="instead of --data: a text file listing image paths, one per line")
    _add_extraction(parser, ActivationSettings())
    add_wandb_arguments(parser)
    parser.set_defaults(run=run_activations)


def run_activations(args: argparse.Namespace) -> int:
    """Extract and print where each (network, image set) went."""
    from analysis.representations.activations import FileImages, extract_activations, split_images
    from common.errors import UserError

    settings = extraction_settings(args)
    if (args.data is None) == (args.stimuli is None):
        raise UserError("give the images with either --data DIR (and --split) or --stimuli LIST")
    if args.stimuli is not None:
        from data_pipeline.behaviour import read_stimulus_list

        stimuli = read_stimulus_list(args.stimuli)
        image_sets = [FileImages("stimuli", tuple(map(str, stimuli.paths)), stimuli.names)]
    else:
        image_sets = [split_images(args.data, task, args.split) for task in _tasks_with_split(args)]
    stored = extract_activations(networks_of(args), image_sets, args.out, settings, args.address, not args.no_progress)
    for (network, image_set), activations in stored.items():
        print(f"{network:>16} {image_set:<16} {activations.directory}")
    return 0


def _tasks_with_split(args: argparse.Namespace) -> list[str]:
    from common.errors import UserError
    from data_pipeline.data_dir import DataDir

    if args.split not in ("train", "test", "heldout"):
        raise UserError(f"--split must be train, test or heldout, not {args.split!r}")
    data = DataDir(args.data)
    if args.tasks:
        return [task for task in args.tasks.split(",") if task]
    tasks = [task for task in data.task_names if args.split != "heldout" or data.heldout_classes(task)]
    if not tasks:
        raise UserError(
            f"{data.path} has no held-out classes; rebuild it with `specialize data build ... "
            "--heldout-classes N` or choose --split test"
        )
    return tasks


# ---------------------------------------------------------------------------------------- decode


def _register_decode(subparsers: argparse._SubParsersAction) -> None:
    defaults = DecodingSettings()
    parser = subparsers.add_parser(
        "decode",
        help="decode held-out classes from networks' layers (linear classifier, k-fold CV)",
        description="For each task's held-out classes (never trained on), train and test a linear classifier on a "
        "layer's activations with stratified k-fold cross-validation over images; mean accuracy with "
        "SEM across folds beside chance, per network, task and layer; a table and figures. "
        "Conv layers are averaged over space unless --pooling full. Resumable.",
    )
    _add_networks(parser)
    parser.add_argument("--data", required=True, help="a data directory built with --heldout-classes")
    parser.add_argument("--tasks", help="comma-separated tasks (default: every task with held-out classes)")
    parser.add_argument(
        "--classifier", default=defaults.classifier, help=f"{' or '.join(CLASSIFIERS)} (default: %(default)s)"
    )
    parser.add_argument(
        "--folds", type=int, default=defaults.folds, help="cross-validation folds (default: %(default)s)"
    )
    parser.add_argument(
        "--C",
        dest="regularisation",
        type=float,
        default=defaults.regularisation,
        help="inverse regularisation strength (default: %(default)s)",
    )
    parser.add_argument(
        "--max-iter", type=int, default=defaults.max_iter, help="solver iterations (default: %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seed of the folds (default: %(default)s)")
    _add_extraction(parser, defaults.extraction)
    add_wandb_arguments(parser)
    parser.set_defaults(run=run_decode)


def run_decode(args: argparse.Namespace) -> int:
    """Decode and print accuracy per network, task and layer."""
    from analysis.representations.decoding import run_decoding

    settings = DecodingSettings(
        classifier=args.classifier,
        folds=args.folds,
        regularisation=args.regularisation,
        max_iter=args.max_iter,
        seed=args.seed,
        tasks=tuple(task for task in (args.tasks or "").split(",") if task),
        extraction=extraction_settings(args),
    )
    summary = run_decoding(networks_of(args), args.data, args.out, settings, args.address, not args.no_progress)
    print(format_decoding(summary))
    print(f"tables, summary.json and figures/ in {args.out}")
    return 0


def format_decoding(summary: pd.DataFrame) -> str:
    """Accuracy ± SEM beside chance, one line per network, task and layer of a decoding summary."""
    first = summary.iloc[0]
    lines = [f"decoding accuracy, mean ± SEM over {first['folds']} folds ({first['classifier']}):"]
    lines += [
        f"  {row.network:>16} {row.task:<10} {row.layer:<8} {row.accuracy:.3f} ± {row.sem:.3f}   "
        f"(chance {row.chance:.3f}, {row.classes} classes)"
        for row in summary.itertuples()
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------- rsa


def _register_rsa(subparsers: argparse._SubParsersAction) -> None:
    defaults = RSASettings()
    parser = subparsers.add_parser(
        "rsa",
        help="compare networks' layer RDMs with behavioural RDMs, with the participants' noise ceiling",
        description="Per network and layer, an RDM over the behavioural stimuli compared with each participant's "
        "RDM; mean and SEM across participants and the noise ceiling (leave-one-out lower, all-"
        "participants upper bound). The behaviour directory holds stimuli.txt and one NPY or CSV RDM "
        "per participant (README, 'Behavioural data').",
    )
    _add_networks(parser)
    parser.add_argument("--stimuli", required=True, help="text file listing the stimulus images, one path per line")
    parser.add_argument("--behaviour", required=True, help="behaviour directory: stimuli.txt + <participant>.npy|csv")
    parser.add_argument(
        "--distance",
        default=defaults.distance,
        help=f"layer RDMs: {', '.join(DISTANCES)} (correlation = 1 - Pearson r) (default: %(default)s)",
    )
    parser.add_argument(
        "--comparison",
        default=defaults.comparison,
        help=f"RDM comparison: {', '.join(COMPARISONS)} (default: %(default)s)",
    )
    parser.add_argument(
        "--error-bar",
        default=defaults.error_bar,
        help=f"{' or '.join(ERROR_BARS)}: across participants, a 95%% percentile interval of the mean over "
        "participants resampled with replacement (the paper's), or mean ± SEM (default: %(default)s)",
    )
    parser.add_argument(
        "--bootstraps",
        dest="n_bootstraps",
        type=int,
        default=defaults.n_bootstraps,
        help="participant resamples of the bootstrap error bar (default: %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seed of those resamples (default: 0)")
    _add_extraction(parser, defaults.extraction)
    add_wandb_arguments(parser)
    parser.set_defaults(run=run_rsa_command)


def run_rsa_command(args: argparse.Namespace) -> int:
    """Run RSA and print the noise ceiling and each network's best layer."""
    from analysis.representations.rsa import run_rsa

    settings = RSASettings(
        distance=args.distance,
        comparison=args.comparison,
        error_bar=args.error_bar,
        n_bootstraps=args.n_bootstraps,
        seed=args.seed,
        extraction=extraction_settings(args),
    )
    summary = run_rsa(
        networks_of(args), args.stimuli, args.behaviour, args.out, settings, args.address, not args.no_progress
    )
    print(format_rsa(summary, settings.comparison))
    print(f"tables, rdms/, summary.json and figures/ in {args.out}")
    return 0


def format_rsa(summary: pd.DataFrame, comparison: str) -> str:
    """The noise ceiling and each network's best layer (mean [error bar] across participants) of an RSA summary."""
    from analysis.representations.rsa import best_layers

    first = summary.iloc[0]
    lines = [f"noise ceiling ({comparison}): [{first['noise_ceiling_lower']:.3f}, {first['noise_ceiling_upper']:.3f}]"]
    for network, layer in best_layers(summary).items():
        row = summary[(summary.network == network) & (summary.layer == layer)].iloc[0]
        lines.append(
            f"  {network:>16} best layer {layer:<8} {row['correlation']:.3f} [{row['low']:.3f}, {row['high']:.3f}]"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------- visualize


def _register_visualize(subparsers: argparse._SubParsersAction) -> None:
    defaults = VisualizeSettings()
    parser = subparsers.add_parser(
        "visualize",
        help="images that drive chosen or top-ranked filters (gradient ascent) and natural top images",
        description="Gradient ascent on the input with jitter, blur and an L2 penalty (METHOD's settings by default) "
        "for chosen filters of a layer, or each task's top-ranked filters in a lesion sweep; a PNG/SVG "
        "grid per layer and task with the test images that drive each filter most.",
    )
    _add_networks(parser, many=False)
    parser.add_argument("--layer", required=True, help=f"one of {LAYER_HELP}")
    parser.add_argument("--filters", help="comma-separated filter indices, e.g. 0,5,9")
    parser.add_argument("--top", type=int, help="each --task's N top-ranked filters in --sweep")
    parser.add_argument("--task", action="append", default=[], help="task whose ranking --top reads (repeatable)")
    parser.add_argument("--sweep", help="output directory of `specialize lesion` on this checkpoint")
    parser.add_argument("--data", help="data directory of the natural test images (default: the checkpoint's)")
    parser.add_argument(
        "--natural-images",
        type=int,
        default=defaults.natural_images,
        help="top natural test images per filter; 0: none (default: %(default)s)",
    )
    parser.add_argument("--steps", type=int, default=defaults.steps, help="gradient steps (default: %(default)s)")
    parser.add_argument(
        "--lr",
        dest="learning_rate",
        type=float,
        default=defaults.learning_rate,
        help="Adam step size (default: %(default)s)",
    )
    parser.add_argument(
        "--jitter",
        type=int,
        default=defaults.jitter,
        help="largest shift in pixels at 224 px, scaled to the network's size (default: %(default)s)",
    )
    parser.add_argument("--blur-sigma", type=float, default=defaults.blur_sigma, help="(default: %(default)s)")
    parser.add_argument("--blur-every", type=int, default=defaults.blur_every, help="(default: %(default)s)")
    parser.add_argument(
        "--l2", type=float, default=defaults.l2, help="weight of the mean squared pixel penalty (default: %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seed of the start images and jitter")
    parser.add_argument(
        "--device",
        default=defaults.device,
        help="auto, cpu or cuda[:i] for the gradient ascent (default: %(default)s: a GPU when there is one)",
    )
    parser.add_argument("--out", required=True, help="output directory")
    add_ray_arguments(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_wandb_arguments(parser)
    parser.set_defaults(run=run_visualize_command)


def run_visualize_command(args: argparse.Namespace) -> int:
    """Visualise and print each group's activations against the baselines."""
    from analysis.representations.visualize import parse_filters, run_visualize, visualized_layer
    from common.errors import UserError

    try:
        filters = parse_filters(args.filters) if args.filters is not None else None
    except ValueError as error:
        raise UserError(str(error)) from None
    settings = VisualizeSettings(
        steps=args.steps,
        learning_rate=args.learning_rate,
        jitter=args.jitter,
        blur_sigma=args.blur_sigma,
        blur_every=args.blur_every,
        l2=args.l2,
        natural_images=args.natural_images,
        seed=args.seed,
        device=args.device,
        resources=Resources.from_args(args),
    )
    network = networks_of(args)[0]
    layer = visualized_layer(args.layer, network)
    summaries = run_visualize(
        network,
        layer,
        args.out,
        filters,
        args.top,
        args.task,
        args.sweep,
        args.data,
        settings,
        args.address,
        not args.no_progress,
    )
    for group, summary in summaries.items():
        natural = (
            f", natural max {summary['natural_max_activation'].mean():.3f}"
            if "natural_max_activation" in summary
            else ""
        )
        print(
            f"{layer} {group}: mean activation of optimised images {summary['activation'].mean():.3f} "
            f"(random {summary['random_activation'].mean():.3f}{natural}) -> {args.out}/{layer}_{group}.png"
        )
    return 0
