"""`specialize study`: a whole study as Ray Tune trials, one per (network, seed), then aggregated across seeds.

A study that builds its own synthetic data (`data.synth`) draws and builds it first. A trial trains its network
(Lightning; validation metrics reported to Tune every epoch, so Tune's status table is live); a pair trial then runs
the lesion sweep, the segregation analysis and its random-task control on the chosen checkpoint; and trials decode
held-out classes, run RSA against behaviour and visualise top filters where the study enables them. Each stage runs
through `specialize.pipeline` (the demo's too) and writes the same directory as the single command would, under the
trial's directory:

    OUT/images/, OUT/data/, OUT/behaviour/              the study's synthetic data (`data` section)
    OUT/trials/<network>-seed<N>/train/                 `specialize train` run directory
                                /accuracy/              test top-1 of the analysed checkpoint (analysis.accuracy)
                                /lesion/                `specialize lesion --out`
                                /segregation/           `specialize segregation --out`
                                /segregation_random/    `specialize segregation --random-tasks --out`
                                /decode/, /rsa/, /visualize/   `specialize decode`, `rsa`, `visualize` (when enabled)
                                /trial.json             the trial's final metrics, then its manifest.json
    OUT/trials.parquet, OUT/aggregate/                  per-trial table; seed aggregation (analysis.seeds)

Resuming is one thing: the stage directories (`common.stage`). A rerun of the same command skips finished trials
(their manifest is written last), and inside an unfinished trial every stage resumes from its own files (training
from its last checkpoint, the sweep from its chunks, segregation from its units). Tune retries a trial whose worker
died (`resources.train.max_retries`).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.cluster_job import ClusterJob
from common.errors import UserError
from common.io import read_json, write_json, write_parquet
from common.layout import (
    ACCURACY_DIR,
    DECODE_DIR,
    LESION_DIR,
    RSA_DIR,
    TRAIN_DIR,
    TRIAL_FILE,
    TRIALS_DIR,
    VISUALIZE_DIR,
    checkpoint_path,
    seeded_name,
)
from common.ray_runner import Resources, add_ray_cluster_arguments, ray_session
from common.stage import StageDir
from common.wandb_runs import WandbTarget, logging_to
from specialize import pipeline
from specialize.study_config import StudyConfig, network_config, study_from_dict, with_absolute_paths

if TYPE_CHECKING:
    import pandas as pd

    from lightning_modules.config import TrainConfig


@dataclass(frozen=True)
class Trial:
    """One network trained with one seed."""

    network: str
    seed: int
    pair: bool  # a task pair (analysed after training) or a single-task control (trained only)

    @property
    def name(self) -> str:
        """`<network>-seed<N>`: the trial's directory and its W&B run names."""
        return seeded_name(self.network, self.seed)

    def directory(self, study: StudyConfig) -> Path:
        """The trial's directory (absolute: Tune runs trials in directories of their own)."""
        return (study.out_dir / TRIALS_DIR / self.name).resolve()

    def stage(self, study: StudyConfig) -> StageDir:
        """The trial's directory as a stage: finished once its final metrics (trial.json) and manifest are written."""
        return StageDir(self.directory(study), "trial", dataclasses.asdict(self))


def trials_of(study: StudyConfig) -> list[Trial]:
    """Every (network, seed) of the study: pairs first, in config order, seeds in order."""
    return [Trial(network, seed, network in study.pairs) for network in study.networks for seed in study.seeds]


def trial_training_config(study: StudyConfig, trial: Trial) -> TrainConfig:
    """The trial's training config: its network's as the study trains it (`study_config.network_config`), with what the
    trial fixes: the seed, the trial's run directory, its W&B run name and its training resources."""
    from lightning_modules.config import validate

    config = network_config(study, trial.network)
    config = dataclasses.replace(
        config,
        seed=trial.seed,
        name=trial.network,
        output=dataclasses.replace(config.output, root=str(trial.directory(study)), run_name=TRAIN_DIR),
        trainer=dataclasses.replace(config.trainer, progress_bar=False, **accelerator(study.resources.train)),
        wandb=dataclasses.replace(config.wandb, name=trial.name, job_type="train"),
    )
    validate(config)
    return config


def accelerator(resources: Resources) -> dict[str, Any]:
    """Lightning settings that match a trial's training resources: one GPU, or the CPU."""
    return {"accelerator": "gpu", "devices": 1} if resources.gpus else {"accelerator": "cpu"}


def wandb_target(study: StudyConfig, trial: Trial, tasks: list[str]) -> WandbTarget:
    """Where a trial's stages after training log: the study's group, the trial's name and labels."""
    return study.wandb_target(trial.name, pair=trial.network, tasks="+".join(tasks), seed=trial.seed)


# ----------------------------------------------------------------------------------------- one trial


def run_trial(params: dict[str, str], study: StudyConfig) -> None:
    """A Tune function trainable for the trial named `params["trial"]`: train, then (pairs) the lesion sweep,
    segregation and its random-task control, and the representation analyses the study enables, each through
    `specialize.pipeline`."""
    import torch
    from ray import tune
    from ray.tune.integration.pytorch_lightning import TuneReportCheckpointCallback

    [trial] = [trial for trial in trials_of(study) if trial.name == params["trial"]]
    stage = trial.stage(study)
    stage.start()
    config = trial_training_config(study, trial)
    torch.set_num_threads(max(1, int(study.resources.train.cpus)))
    run_dir = pipeline.train(config, [TuneReportCheckpointCallback(save_checkpoints=False, on="validation_end")])
    summary = read_json(run_dir / "summary.json")
    metrics = {"stage": "train", "best_val_loss": summary["best_val_loss"], **summary["metrics"]}
    tune.report(metrics)
    with logging_to(wandb_target(study, trial, config.tasks)):
        if study.analyses.lesion.enabled:  # an analysed study: every network's test accuracy (Fig. 1C)
            checkpoint = checkpoint_path(run_dir, study.analyses.checkpoint)
            table = pipeline.test_accuracy(checkpoint, Path(config.data.dir), stage.path / ACCURACY_DIR)
            metrics.update(
                {f"test/{row.task}/top1": row.accuracy for row in table.itertuples() if row.scope == "all_outputs"}
            )
        if trial.pair and study.analyses.lesion.enabled:
            metrics.update(analyse_pair(study, trial, config, run_dir))
            tune.report(metrics)
        if representation_stages(study, trial):
            metrics.update(analyse_representations(study, trial, config, run_dir))
            tune.report(metrics)
    # metrics sorted: the table has one column order whether a training resumed or not
    identity = {**dataclasses.asdict(trial), "directory": str(stage.path), "tasks": list(config.tasks)}
    write_json(stage.path / TRIAL_FILE, {**identity, **dict(sorted(metrics.items()))})
    stage.finish("trial", seed=trial.seed, network=trial.network)


def analyse_pair(study: StudyConfig, trial: Trial, config: TrainConfig, run_dir: Path) -> dict[str, Any]:
    """The lesion sweep of the trial's chosen checkpoint, then segregation and the random-task control."""
    from analysis.segregation.run import summary_scalars

    analyses, directory = study.analyses, trial.directory(study)
    checkpoint = checkpoint_path(run_dir, analyses.checkpoint)
    sweep = pipeline.lesion(checkpoint, Path(config.data.dir), directory / LESION_DIR, analyses.lesion, progress=False)
    metrics: dict[str, Any] = {"stage": "lesion"}
    if not analyses.segregation.enabled:
        return metrics
    summaries = pipeline.segregation(sweep.out_dir, Path(config.data.dir), directory, analyses.segregation)
    for summary in summaries.values():
        prefix = "random/" if summary["random_tasks"] else ""
        metrics.update({f"{prefix}{key}": value for key, value in summary_scalars(summary).items()})
    return {**metrics, "stage": "segregation"}


def representation_stages(study: StudyConfig, trial: Trial) -> bool:
    """Whether the trial decodes, runs RSA or visualises filters."""
    analyses = study.analyses
    visualizes = trial.pair and analyses.lesion.enabled and analyses.visualize.runs_on(trial.network)
    return analyses.decoding.runs_on(trial.network) or analyses.rsa.runs_on(trial.network) or visualizes


def analyse_representations(study: StudyConfig, trial: Trial, config: TrainConfig, run_dir: Path) -> dict[str, Any]:
    """Decoding of held-out classes, RSA against behaviour and the visualisation of the top filters, of the trial's
    chosen checkpoint (as `specialize decode`, `rsa` and `visualize` write them, under the trial's decode/, rsa/ and
    visualize/)."""
    from analysis.representations.activations import Network

    analyses, directory, data = study.analyses, trial.directory(study), Path(config.data.dir)
    network = Network(trial.network, checkpoint_path(run_dir, analyses.checkpoint))
    metrics: dict[str, Any] = {}
    if analyses.decoding.runs_on(trial.network):
        table = pipeline.decode([network], data, directory / DECODE_DIR, analyses.decoding)
        metrics.update({f"decode/{row.task}/{row.layer}": float(row.accuracy) for row in table.itertuples()})
    if analyses.rsa.runs_on(trial.network):
        stimuli, behaviour = pipeline.behaviour_inputs(study)
        table = pipeline.rsa([network], stimuli, behaviour, directory / RSA_DIR, analyses.rsa)
        metrics.update({f"rsa/{row.layer}": float(row.correlation) for row in table.itertuples()})
    if trial.pair and analyses.lesion.enabled and analyses.visualize.runs_on(trial.network):
        pipeline.visualize(
            network, config.tasks, directory / LESION_DIR, data, directory / VISUALIZE_DIR, analyses.visualize
        )
    return {**metrics, "stage": "representations"}


# ------------------------------------------------------------------------------------------ the study


def trial_resources(study: StudyConfig, trial: Trial) -> Any:
    """A trial's placement group: its training resources, plus slots for the Ray tasks of its analyses, each as large
    as the largest of them."""
    from ray import tune

    def bundle(cpus: float, gpus: float) -> dict[str, float]:
        return {"CPU": cpus, **({"GPU": gpus} if gpus else {})}

    resources = study.resources
    bundles = [bundle(resources.train.cpus, resources.train.gpus)]
    tasks = study.analyses.ray_stages(trial.network, trial.pair)
    if tasks:
        task = bundle(max(task.cpus for task in tasks), max(task.gpus for task in tasks))
        bundles += [task] * resources.tasks_per_trial
    return tune.PlacementGroupFactory(bundles)


def study_stage(study: StudyConfig) -> StageDir:
    """The study's directory as a stage. Its identity is what its results depend on: seeds may be added to a study,
    and resources (the study's and each analysis') and W&B change no number."""
    data = without_resources(study.to_dict())
    return StageDir(
        study.out_dir,
        "study",
        {key: data[key] for key in ("name", "pairs", "controls", "overrides", "data", "analyses")},
        "rerun the same study config (adding seeds is fine), or give the study another name",
        holds_stages=True,
    )


def without_resources(data: Any) -> Any:
    """A nested mapping without its `resources` sections."""
    if not isinstance(data, dict):
        return data
    return {key: without_resources(value) for key, value in data.items() if key != "resources"}


def run_study(
    study: StudyConfig, address: str | None = None, aggregate_only: bool = False, only_seeds: list[int] | None = None
) -> pd.DataFrame:
    """Build the study's synthetic data when it asks for it, run (or continue) every unfinished trial with Ray Tune,
    then aggregate; returns the per-trial table.

    `only_seeds` runs the trials of those seeds alone and leaves the aggregation to a later `--aggregate-only`
    (one job of a Slurm array per seed: the jobs then never write the same files).
    """
    stage = study_stage(study).check()
    out = stage.start(study.to_dict())
    chosen = [trial for trial in trials_of(study) if only_seeds is None or trial.seed in only_seeds]
    pending = [trial for trial in chosen if not trial.stage(study).finished]
    if pending and not aggregate_only and study.data.synth is not None:
        with logging_to(study.wandb_target(f"{study.name}-data")):  # before Ray starts: the build forks processes
            pipeline.synthetic_data(out, study.data)
    failed = tune_trials(study, pending, address) if pending and not aggregate_only else []
    if only_seeds is not None:
        report_failures(failed, pending, out)
        return trial_table(study, only_seeds)
    table = trial_table(study)
    if not table.empty:
        from analysis.seeds import aggregate_study

        write_parquet(out / "trials.parquet", table)
        aggregate_study(
            out / "aggregate",
            table,
            study.analyses.segregation.fraction,
            study.wandb_target(f"{study.name}-aggregate"),
            study.aggregate,
        )
    stage.finish(
        "study",
        seeds=list(study.seeds),
        networks=list(study.networks),
        trials=table["name"].tolist() if not table.empty else [],
    )
    report_failures(failed, pending, out)
    return table


def report_failures(failed: list[str], pending: list[Trial], out: Path) -> None:
    """UserError naming the first failed trial, when any failed."""
    if failed:
        raise UserError(
            f"{len(failed)} of {len(pending)} trials failed (first: {failed[0]}); their logs are in "
            f"{out / 'ray_tune'}; rerun the same command to retry them"
        )


def tune_trials(study: StudyConfig, trials: list[Trial], address: str | None) -> list[str]:
    """Run `trials` as Ray Tune trials (Tune sees only their names; each trial rebuilds its typed settings from the
    study); returns the errors of those that failed."""
    from ray import tune

    by_name = {trial.name: trial for trial in trials}
    with ray_session(address):
        trainable = tune.with_resources(
            tune.with_parameters(run_trial, study=study),
            lambda params: trial_resources(study, by_name[params["trial"]]),
        )
        results = tune.Tuner(
            trainable,
            param_space={"trial": tune.grid_search(list(by_name))},
            run_config=tune.RunConfig(
                name=f"{study.name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}",
                storage_path=str((study.out_dir / "ray_tune").resolve()),
                failure_config=tune.FailureConfig(max_failures=study.resources.train.max_retries),
                verbose=1,
            ),
        ).fit()
    return [
        f"{result.config['trial']}: {str(result.error).splitlines()[-1]}"
        for result in results
        if result.error is not None
    ]


def trial_table(study: StudyConfig, seeds: list[int] | None = None) -> pd.DataFrame:
    """One row per finished trial of the study's networks and seeds (or `seeds`): its final metrics (trial.json)."""
    import pandas as pd

    rows = [
        {"name": trial.name, **read_json(trial.directory(study) / TRIAL_FILE)}
        for trial in trials_of(study)
        if seeds is None or trial.seed in seeds
        if trial.stage(study).finished
    ]
    return pd.DataFrame(rows)


# -------------------------------------------------------------------------------------------- the commands


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `study` and `tune` subcommands."""
    parser = subparsers.add_parser(
        "study",
        help="a whole study: networks x seeds as Ray Tune trials (train, lesion, segregation, decoding, "
        "RSA), aggregated",
        description="Run every (network, seed) of a study config as a Ray Tune trial: train, then for task pairs the "
        "lesion sweep, segregation and its random-task control, and decoding and RSA where the config "
        "enables them; then aggregate across seeds. Rerun the same command to continue: finished trials "
        "and stages are not redone.",
    )
    parser.add_argument("--config", required=True, help="study YAML, e.g. studies/tiny.yaml")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="overrides, e.g. seeds=[3] output=runs/x")
    parser.add_argument(
        "--aggregate-only", action="store_true", help="only rebuild tables and figures from finished trials"
    )
    parser.add_argument(
        "--seeds",
        help="run only these comma-separated seeds of the study, without aggregating (one "
        "job per seed, e.g. a Slurm array; aggregate after with --aggregate-only)",
    )
    add_ray_cluster_arguments(parser)
    parser.set_defaults(run=run_study_command, job=study_job)

    parser = subparsers.add_parser(
        "tune",
        help="train configs x seeds as parallel Ray Tune trials (a study without analyses)",
        description="Train every --config for every seed as a Ray Tune trial (a study whose analyses are off), into "
        "OUT/trials/<name>-seed<N>/train; the table of final metrics goes to OUT/trials.parquet.",
    )
    parser.add_argument(
        "--config",
        dest="configs",
        action="append",
        required=True,
        help="YAML training config; repeat for several task pairs",
    )
    parser.add_argument(
        "--seeds", default=",".join(map(str, StudyConfig().seeds)), help="comma-separated seeds (default: %(default)s)"
    )
    parser.add_argument("--out", required=True, help="directory of the trials and the results table")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="overrides applied to every config")
    add_ray_cluster_arguments(parser)
    defaults = Resources()
    parser.add_argument(
        "--cpus-per-trial", type=float, default=defaults.cpus, help="CPUs (and torch threads) per trial"
    )
    parser.add_argument("--gpus-per-trial", type=float, default=defaults.gpus, help="GPUs per trial (at most 1)")
    parser.add_argument(
        "--max-failures", type=int, default=defaults.max_retries, help="retries of a trial whose worker died"
    )
    parser.set_defaults(run=run_tune_command, job=tune_job)


def study_job(args: argparse.Namespace) -> ClusterJob:
    """A study runs on a Ray cluster; a job of an array runs one seed's trials (`--seeds N`)."""
    return ClusterJob(ray=True, seed_settings=("--seeds=",))


def tune_job(args: argparse.Namespace) -> ClusterJob:
    """`tune` runs on a Ray cluster and reads the data directory its overrides name (`data.dir=DIR`), if any."""
    data = [override.partition("=")[2] for override in args.overrides if override.startswith("data.dir=")]
    return ClusterJob(ray=True, data_dir=data[-1] if data else None, data_setting="data.dir=" if data else None)


def run_study_command(args: argparse.Namespace) -> int:
    """Run (or continue) a study and print its trials."""
    from specialize.study_config import load_study

    study = load_study(args.config, args.overrides)
    only_seeds = parse_seeds(args.seeds) if args.seeds is not None else None
    unknown = sorted(set(only_seeds or ()) - set(study.seeds))
    if unknown:
        raise UserError(f"--seeds {unknown[0]} is not among the study's seeds {list(study.seeds)}; add it to `seeds`")
    print_trials(run_study(study, args.address, args.aggregate_only, only_seeds), study.out_dir)
    return 0


def run_tune_command(args: argparse.Namespace) -> int:
    """Train configs x seeds as a study without analyses."""
    print_trials(run_study(tune_study(args), args.address), Path(args.out))
    return 0


def tune_study(args: argparse.Namespace) -> StudyConfig:
    """The study `specialize tune` runs: every config as a network, trained for every seed, no analyses."""
    from common.typed_config import read_yaml

    names = [str(read_yaml(path).get("name", Path(path).stem)) for path in args.configs]
    if len(set(names)) != len(names):
        raise UserError("two --config files share a `name`; give each task pair's config its own name")
    out = Path(args.out)
    return with_absolute_paths(
        study_from_dict(
            {
                "name": out.name,
                "output": str(out.parent),
                "seeds": parse_seeds(args.seeds),
                "pairs": {name: {"config": path} for name, path in zip(names, args.configs)},
                "overrides": list(args.overrides),
                "analyses": {"lesion": {"enabled": False}, "segregation": {"enabled": False}},
                "resources": {
                    "train": {
                        "cpus": args.cpus_per_trial,
                        "gpus": args.gpus_per_trial,
                        "max_retries": args.max_failures,
                    }
                },
            }
        )
    )


def parse_seeds(text: str) -> list[int]:
    """'0,1,2' -> [0, 1, 2]; UserError on anything else."""
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"--seeds must be comma-separated integers, e.g. 0,1,2 (got {text!r})") from None
    if not seeds:
        raise UserError("--seeds is empty; give at least one seed, e.g. --seeds 0")
    return seeds


def print_trials(table: pd.DataFrame, out: Path) -> None:
    """The finished trials' validation loss and top-1 per task, and where the results are."""
    columns = [
        c for c in table.columns if c in ("name", "best_val_loss") or c.startswith("val/") and c.endswith("/top1")
    ]
    if not table.empty:
        print(table[columns].to_string(index=False))
    print(f"trials: {out / 'trials.parquet'}; seed aggregation: {out / 'aggregate'}")
