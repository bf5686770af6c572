"""`specialize demo`: the whole study, end to end, on the built-in synthetic data, at a size a laptop runs.

The demo is a study (`studies/demo.yaml`: its sizes and settings, one seed) whose stages run in this process through
the study's own pipeline (`specialize.pipeline`), into one directory. Stages (each resumes: rerunning the command
skips what is finished):
  1. synthesise face and object image folders                      -> OUT/images
  2. build them into FFCV .beton files (train, val, test, held-out)  -> OUT/data
     and synthetic participants who judge face identity            -> OUT/stimuli.txt, OUT/behaviour
  3. train small Face, Object and Dual-task VGG16s                   -> OUT/train/<name>
  4. lesion sweep of the Dual-task network (Ray)                     -> OUT/lesion
  5. segregation index per layer with bootstrap CIs, and beside it
     the random-task control                                         -> OUT/segregation, OUT/segregation_random,
                                                                        OUT/figures/segregation_vs_control.png
  6. decoding of held-out classes by the three networks              -> OUT/decode
  7. RSA against the synthetic participants                          -> OUT/rsa
  8. feature visualisation of each task's top conv5_3 filters        -> OUT/visualize
  9. one self-contained HTML report of it all                        -> OUT/report.html
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from analysis.segregation.settings import SIGNIFICANCE
from common.layout import DECODE_DIR, LESION_DIR, RSA_DIR, TRAIN_DIR, VISUALIZE_DIR, checkpoint_path
from common.wandb_runs import logging_to

if TYPE_CHECKING:
    from specialize.study_config import StudyConfig

REPO = Path(__file__).resolve().parent.parent
DEMO_STUDY = REPO / "studies" / "demo.yaml"
SIZES = {  # the options that resize the demo
    "classes": "classes per task",
    "train_per_class": "training images per class, a tenth of them set aside for validation",
    "test_per_class": "test images per class",
    "resolution": "image side the networks see",
    "epochs": "training epochs",
    "images_per_task": "lesion-sweep images per task",
    "bootstraps": "bootstrap resamples for the CIs",
    "visualize_steps": "gradient-ascent steps of the feature visualisation",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `demo` subcommand."""
    parser = subparsers.add_parser(
        "demo", help="run the whole study on built-in synthetic data (resumable)", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--out", default="runs/demo", help="demo directory (default: %(default)s)")
    defaults = demo_sizes(shipped_demo_study())
    for option, text in SIZES.items():
        parser.add_argument(
            f"--{option.replace('_', '-')}", type=int, help=f"{text} (default: {defaults[option]}, studies/demo.yaml)"
        )
    parser.set_defaults(run=run)


def load_demo_study(
    out: Path | None = None, study_overrides: list[str] = (), training_overrides: list[str] = ()
) -> StudyConfig:
    """studies/demo.yaml, its paths against the repository, living in `out`, with study settings and training
    settings changed."""
    from common.typed_config import apply_override, read_yaml
    from specialize.study_config import study_from_dict, with_absolute_paths

    data = read_yaml(DEMO_STUDY)
    if out is not None:  # the study's directory
        data.update(name=out.name, output=str(out.parent))
    for override in study_overrides:
        apply_override(data, override)
    data["overrides"] = [*data.get("overrides", []), *training_overrides]  # later ones win
    return with_absolute_paths(study_from_dict(data, REPO), REPO)


def shipped_demo_study() -> StudyConfig:
    """studies/demo.yaml as shipped, its paths against the repository, without `load_demo_study`'s checks (which
    load torch to find each network's layers; the demo checks them when it runs): for the help's defaults."""
    from common.typed_config import build_dataclass, read_yaml
    from specialize.study_config import StudyConfig, with_absolute_paths

    return with_absolute_paths(build_dataclass(StudyConfig, read_yaml(DEMO_STUDY)), REPO)


def demo_sizes(study: StudyConfig) -> dict[str, Any]:
    """The demo study's value of each size the CLI sets."""
    from specialize.study_config import network_config

    training = network_config(study, next(iter(study.pairs)))
    analyses = study.analyses
    return {
        "classes": study.data.synth.classes_per_task,
        "train_per_class": study.data.synth.train_per_class,
        "test_per_class": study.data.synth.test_per_class,
        "resolution": training.data.resolution,
        "epochs": training.trainer.epochs,
        "images_per_task": analyses.lesion.images_per_task,
        "bootstraps": analyses.segregation.n_bootstraps,
        "visualize_steps": analyses.visualize.steps,
    }


def demo_study(args: argparse.Namespace) -> StudyConfig:
    """The demo study resized by the CLI's options, living in --out."""
    study, training = [], []
    if args.classes is not None:
        study.append(f"data.synth.classes_per_task={args.classes}")
    if args.train_per_class is not None:
        validation = max(1, args.train_per_class // 10)
        study += [f"data.synth.train_per_class={args.train_per_class}", f"data.build.counts.val={validation}"]
    if args.test_per_class is not None:
        study += [f"data.synth.test_per_class={args.test_per_class}", f"data.build.counts.test={args.test_per_class}"]
    if args.resolution is not None:  # synthetic images are drawn at 64 px or more
        study.append(f"data.synth.size={max(64, args.resolution)}")
        training.append(f"data.resolution={args.resolution}")
    if args.epochs is not None:
        training.append(f"trainer.epochs={args.epochs}")
    if args.images_per_task is not None:
        study.append(f"analyses.lesion.images_per_task={args.images_per_task}")
    if args.bootstraps is not None:
        study.append(f"analyses.segregation.n_bootstraps={args.bootstraps}")
    if args.visualize_steps is not None:
        study.append(f"analyses.visualize.steps={args.visualize_steps}")
    return load_demo_study(Path(args.out), study, training)


def demo_networks(study: StudyConfig) -> list[str]:
    """The single-task networks, then the dual-task network: the order they train and appear in the tables."""
    return [*study.controls, *study.pairs]


def validation_accuracies(run_dir: Path) -> dict[str, float]:
    """Per-task validation top-1 (over all outputs) at the end of a run."""
    from common.io import read_json

    metrics = read_json(run_dir / "summary.json")["metrics"]
    return {
        key.split("/")[1]: value
        for key, value in metrics.items()
        if key.startswith("val/") and key.endswith("/top1") and key.count("/") == 2
    }


def train_networks(study: StudyConfig, out: Path) -> dict[str, Path]:
    """Stage 3: every network of the study, each in OUT/train/<its config's name>; name -> run directory."""
    from specialize import pipeline
    from specialize.study_config import network_config

    runs = {}
    for name in demo_networks(study):
        config = network_config(study, name)
        config = dataclasses.replace(config, output=dataclasses.replace(config.output, root=str(out / TRAIN_DIR)))
        runs[name] = pipeline.train(config)
    return runs


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


def analyse(study: StudyConfig, out: Path, data: Path, runs: dict[str, Path]) -> None:
    """Stages 4-8 through the pipeline, printing what each produced: the sweep of the dual-task network's chosen
    checkpoint, segregation beside the random-task control, decoding and RSA of every network, and the visualisation
    of the dual-task network's top filters."""
    from analysis.representations.activations import Network
    from analysis.representations.cli import format_decoding, format_rsa
    from lightning_modules.config import read_run_config
    from specialize import pipeline

    analyses = study.analyses
    [dual] = study.pairs
    with logging_to(study.wandb_target(dual)):
        sweep = pipeline.lesion(
            checkpoint_path(runs[dual], analyses.checkpoint), data, out / LESION_DIR, analyses.lesion, progress=True
        )
        print(f"\nlesion sweep: {len(sweep.filter_losses)} (layer, filter, task) rows in {sweep.out_dir}")
        print("\n" + format_segregation(pipeline.segregation(sweep.out_dir, data, out, analyses.segregation)))
    print(f"figure: {plot_against_control(out)[0]}")
    networks = [Network(name, checkpoint_path(run_dir, analyses.checkpoint)) for name, run_dir in runs.items()]
    with logging_to(study.wandb_target(study.name)):
        print("\n" + format_decoding(pipeline.decode(networks, data, out / DECODE_DIR, analyses.decoding)))
        stimuli, behaviour = pipeline.behaviour_inputs(study)
        rsa = pipeline.rsa(networks, stimuli, behaviour, out / RSA_DIR, analyses.rsa)
    participants = study.data.behaviour.participants
    print(
        f"\nRSA with {participants} synthetic participants who judge face identity:\n"
        + format_rsa(rsa, analyses.rsa.comparison)
    )
    tasks = read_run_config(runs[dual]).tasks
    with logging_to(study.wandb_target(networks[-1].name)):
        pipeline.visualize(networks[-1], tasks, out / LESION_DIR, data, out / VISUALIZE_DIR, analyses.visualize)


def format_segregation(summaries: dict[str, dict[str, Any]]) -> str:
    """The segregation index per layer with its CI (and, with a null, its permutation p-value and null band), beside
    the random-task control's, and the dual-task network's intact test accuracy per task."""
    network, control = summaries["segregation"], summaries["segregation_random"]
    scope = network["default_scope"]
    [rows] = network["segregation_index"][scope].values()
    [random_rows] = control["segregation_index"][scope].values()
    nulls = network.get("null_partitions", 0)
    lines = [
        f"segregation index, top {network['fraction']:.0%} lesions, {network['confidence_level']:.0%} CI "
        f"from {network['n_bootstraps']} resamples ({scope})"
        + (
            f";\n  p: permutation p-value against {nulls} random partitions of the classes (* p < {SIGNIFICANCE}); "
            "null: their mean and 95% band; the random pseudo-tasks are partition 1:"
            if nulls
            else ":"
        ),
        f"  {'layer':<8} {'face vs object':>26}{'p':>8}  {'null':>26}   {'random pseudo-tasks':>26}"
        if nulls
        else f"  {'layer':<8} {'face vs object':>26}   {'random pseudo-tasks':>26}",
    ]
    for row, random_row in zip(rows, random_rows):
        null = (
            f"{row['p_value']:>8.3f}{' *' if row['p_value'] < SIGNIFICANCE else '  '}  "
            f"{_interval(row['null_mean'], row['null_low'], row['null_high']):>26}"
            if "p_value" in row
            else ""
        )
        lines.append(
            f"  {row['layer']:<8} {_interval(row['si'], row['low'], row['high']):>26}{null}   "
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
    from specialize import pipeline

    study = demo_study(args)
    out = Path(args.out)
    with logging_to(study.wandb_target(f"{study.name}-data")):
        data = pipeline.synthetic_data(out, study.data)
    runs = train_networks(study, out)
    print("\nvalidation top-1 per task (best checkpoint's epoch is used below):")
    for name, run_dir in runs.items():
        accuracies = ", ".join(f"{task} {value:.3f}" for task, value in validation_accuracies(run_dir).items())
        print(f"  {name:8s} {accuracies}   ({run_dir})")
    with ray_session(None):  # one local Ray for every Ray stage, started after the stages that fork processes
        analyse(study, out, data, runs)
    print(f"\nfigures: {out / 'segregation' / 'figures'}")
    print(f"report: {write_report(out)}")
    return 0
