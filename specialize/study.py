"""`specialize study`: a whole study as Ray Tune trials, one per (network, seed), then aggregated across seeds.

A trial trains its network (Lightning; validation metrics reported to Tune every epoch, so Tune's status table is
live); a pair trial then runs the lesion sweep, the segregation analysis and its random-task control on the chosen
checkpoint; and every trial, when the study enables them, decodes held-out classes and runs RSA against behaviour.
Each stage writes the same directory as the single command would, under the trial's directory:

    OUT/trials/<network>-seed<N>/train/                 `specialize train` run directory
                                /lesion/                `specialize lesion --out`
                                /segregation/           `specialize segregation --out`
                                /segregation_random/    `specialize segregation --random-tasks --out`
                                /decode/, /rsa/         `specialize decode --out`, `specialize rsa --out` (when enabled)
                                /trial.json             the trial's final metrics, written when it has finished
    OUT/trials.parquet, OUT/aggregate/                  per-trial table; seed aggregation (analysis.seeds)

Resuming is one thing: the run directories. A rerun of the same command skips trials that have a trial.json, and
inside an unfinished trial every stage resumes from its own files (training from its last checkpoint, the sweep
from its chunks, segregation from its units). Tune retries a trial whose worker died (`max_failures`).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.errors import UserError
from common.io import read_json, write_json, write_parquet
from common.manifest import write_manifest
from common.output_dir import check_same_job, recorded_identity
from common.ray_runner import add_ray_cluster_arguments, ray_session
from common.redact import redact
from common.wandb_runs import WandbTarget, log_stage
from specialize.study_config import StageResources, StudyConfig, study_from_dict, with_absolute_paths

if TYPE_CHECKING:
    import pandas as pd

TRIAL_FILE = "trial.json"


@dataclass(frozen=True)
class Trial:
    """One network trained with one seed."""

    network: str
    seed: int
    pair: bool  # a task pair (analysed after training) or a single-task control (trained only)

    @property
    def name(self) -> str:
        """`<network>-seed<N>`: the trial's directory and its W&B run names."""
        return f"{self.network}-seed{self.seed}"

    def directory(self, study: StudyConfig) -> Path:
        """The trial's directory (absolute: Tune runs trials in directories of its own)."""
        return (study.out_dir / "trials" / self.name).resolve()


def trials_of(study: StudyConfig) -> list[Trial]:
    """Every (network, seed) of the study: pairs first, in config order, seeds in order."""
    return [Trial(network, seed, network in study.pairs) for network in study.networks for seed in study.seeds]


def trial_training_config(study: StudyConfig, trial: Trial) -> Any:
    """The trial's resolved training config (paths absolute): the network's config with the study's W&B project and
    mode, then the study's and the network's own overrides (which may change those two), then what the trial fixes:
    the seed, the trial's run directory, the study's W&B group and names, and the trial's training resources."""
    from lightning_modules.config import load_config

    spec = study.networks[trial.network]
    directory = trial.directory(study)
    overrides = [
        f"wandb.project={study.wandb.project}",
        f"wandb.mode={study.wandb.mode}",
        *study.overrides,
        *spec.overrides,
        f"seed={trial.seed}",
        f"name={trial.network}",
        f"output.root={directory}",
        "output.run_name=train",
        "trainer.progress_bar=false",
        f"wandb.group={study.wandb_group}",
        f"wandb.name={trial.name}",
        "wandb.job_type=train",
        *accelerator_overrides(study.resources.train),
    ]
    if spec.data:
        overrides.append(f"data.dir={spec.data}")
    config = load_config(spec.config, overrides)
    config.data.dir = str(Path(config.data.dir).resolve())  # trials run in directories of their own
    return config


def accelerator_overrides(resources: StageResources) -> list[str]:
    """Lightning settings that match a trial's training resources: one GPU, or the CPU."""
    return ["trainer.accelerator=gpu", "trainer.devices=1"] if resources.gpus else ["trainer.accelerator=cpu"]


def wandb_target(study: StudyConfig, trial: Trial, tasks: list[str]) -> WandbTarget:
    """Where a trial's lesion and segregation stages log: the study's group, the trial's name and labels."""
    return WandbTarget(
        project=study.wandb.project,
        mode=study.wandb.mode,
        group=study.wandb_group,
        name=trial.name,
        labels={"pair": trial.network, "tasks": "+".join(tasks), "seed": trial.seed, "study": study.name},
    )


# ----------------------------------------------------------------------------------------- one trial


def run_trial(params: dict[str, Any], study: dict[str, Any], trials: dict[str, dict[str, Any]]) -> None:
    """A Tune function trainable for the trial named `params["trial"]`: train, then (pairs) lesion sweep, segregation
    and its random-task control. `trials` maps trial names to their Trial fields and resolved training config."""
    import torch
    from ray import tune
    from ray.tune.integration.pytorch_lightning import TuneReportCheckpointCallback

    from lightning_modules.config import config_from_dict
    from lightning_modules.train import train

    study, entry = study_from_dict(study), trials[params["trial"]]
    trial, config = Trial(**entry["trial"]), config_from_dict(entry["config"])
    torch.set_num_threads(max(1, int(study.resources.train.cpus)))
    run_dir = train(config, callbacks=[TuneReportCheckpointCallback(save_checkpoints=False, on="validation_end")])
    summary = read_json(run_dir / "summary.json")
    metrics = {"stage": "train", "best_val_loss": summary["best_val_loss"], **summary["metrics"]}
    tune.report(metrics)
    if trial.pair and study.analyses.lesion.enabled:
        metrics.update(analyse_pair(study, trial, config, run_dir))
        tune.report(metrics)
    if study.analyses.representations(trial.network):
        metrics.update(analyse_representations(study, trial, config, run_dir))
        tune.report(metrics)
    write_json(
        trial.directory(study) / TRIAL_FILE,
        {**dataclasses.asdict(trial), "directory": str(trial.directory(study)), "tasks": list(config.tasks), **metrics},
    )


def analyse_pair(study: StudyConfig, trial: Trial, config: Any, run_dir: Path) -> dict[str, Any]:
    """The lesion sweep of the trial's chosen checkpoint, then segregation and the random-task control."""
    from analysis.segregation.run import run_segregation, summary_scalars
    from analysis.segregation.settings import SegregationSettings
    from sweeps.distributed import run_sweep
    from sweeps.settings import SweepSettings

    lesion, segregation = study.analyses.lesion, study.analyses.segregation
    directory, target = trial.directory(study), wandb_target(study, trial, config.tasks)
    checkpoint = run_dir / "checkpoints" / f"{lesion.checkpoint}.ckpt"
    settings = SweepSettings(
        layers=tuple(lesion.layers),
        ranking=lesion.ranking,
        filters_per_task=lesion.filters_per_task,
        resources=study.task_resources(study.resources.sweep_task),
    )
    logged = (directory / "lesion" / "manifest.json").is_file()
    sweep = run_sweep(
        checkpoint, config.data.dir, directory / "lesion", lesion.images_per_task, lesion.seed, settings, progress=False
    )
    if not logged:
        log_stage(
            target,
            "lesion",
            sweep.out_dir,
            {"checkpoint": str(checkpoint), **dataclasses.asdict(lesion)},
            tables={"ranking": sweep.ranking},
            summary=intact_scalars(sweep.filter_losses),
        )
    metrics: dict[str, Any] = {"stage": "lesion"}
    if not segregation.enabled:
        return metrics
    for random_tasks, name in ((False, "segregation"), (True, "segregation_random")):
        if random_tasks and not segregation.random_tasks:
            continue
        result = run_segregation(
            sweep.out_dir,
            directory / name,
            config.data.dir,
            SegregationSettings(
                fraction=segregation.fraction,
                fractions=tuple(segregation.fractions),
                n_bootstraps=segregation.bootstraps,
                seed=segregation.seed,
                random_tasks=random_tasks,
                batch_size=segregation.batch_size,
                resources=study.task_resources(study.resources.eval_task),
            ),
            wandb=dataclasses.replace(target, name=f"{trial.name}-random" if random_tasks else trial.name),
        )
        prefix = "random/" if random_tasks else ""
        metrics.update({f"{prefix}{key}": value for key, value in summary_scalars(result).items()})
    metrics["stage"] = "segregation"
    return metrics


def analyse_representations(study: StudyConfig, trial: Trial, config: Any, run_dir: Path) -> dict[str, Any]:
    """Decoding of held-out classes and RSA against behaviour, of the trial's chosen checkpoint (as `specialize
    decode` and `specialize rsa` write them, under the trial's decode/ and rsa/)."""
    from analysis.representations.activations import Network
    from analysis.representations.decoding import run_decoding
    from analysis.representations.rsa import run_rsa
    from analysis.representations.settings import ActivationSettings

    analyses, directory = study.analyses, trial.directory(study)
    network = [Network(trial.network, run_dir / "checkpoints" / f"{analyses.lesion.checkpoint}.ckpt")]
    resources = study.task_resources(study.resources.eval_task)
    metrics: dict[str, Any] = {}
    if analyses.decoding.runs_on(trial.network):
        extraction = ActivationSettings(layers=tuple(analyses.decoding.layers), pooling="mean", resources=resources)
        table = run_decoding(
            network,
            config.data.dir,
            directory / "decode",
            settings=analyses.decoding.settings(),
            extraction=extraction,
            progress=False,
        )
        metrics.update({f"decode/{row.task}/{row.layer}": float(row.accuracy) for row in table.itertuples()})
    if analyses.rsa.runs_on(trial.network):
        extraction = ActivationSettings(layers=tuple(analyses.rsa.layers), resources=resources)
        table = run_rsa(
            network,
            analyses.rsa.stimuli,
            analyses.rsa.behaviour,
            directory / "rsa",
            analyses.rsa.settings(),
            extraction,
            progress=False,
        )
        metrics.update({f"rsa/{row.layer}": float(row.correlation) for row in table.itertuples()})
    return {**metrics, "stage": "representations"}


def intact_scalars(filter_losses: pd.DataFrame) -> dict[str, float]:
    """The intact network's loss and accuracy per task on the sweep's images, as W&B summary keys."""
    intact = filter_losses.drop_duplicates("task")
    return {
        **{f"intact/{row.task}/loss": float(row.intact_loss) for row in intact.itertuples()},
        **{f"intact/{row.task}/accuracy": float(row.intact_accuracy) for row in intact.itertuples()},
    }


# ------------------------------------------------------------------------------------------ the study


def trial_resources(study: StudyConfig, trial: Trial) -> Any:
    """A trial's placement group: its training resources, plus slots for the sweep and evaluation tasks it submits."""
    from ray import tune

    def bundle(cpus: float, gpus: float) -> dict[str, float]:
        return {"CPU": cpus, **({"GPU": gpus} if gpus else {})}

    resources = study.resources
    bundles = [bundle(resources.train.cpus, resources.train.gpus)]
    if (trial.pair and study.analyses.lesion.enabled) or study.analyses.representations(trial.network):
        task = bundle(
            max(resources.sweep_task.cpus, resources.eval_task.cpus),
            max(resources.sweep_task.gpus, resources.eval_task.gpus),
        )
        bundles += [task] * resources.tasks_per_trial
    return tune.PlacementGroupFactory(bundles)


def study_identity(study: StudyConfig) -> dict[str, Any]:
    """What a study's results depend on (seeds may be added to a study; resources and W&B change no number)."""
    data = study.to_dict()
    return {key: data[key] for key in ("name", "pairs", "controls", "overrides", "analyses")}


def run_study(
    study: StudyConfig, address: str | None = None, aggregate_only: bool = False, only_seeds: list[int] | None = None
) -> pd.DataFrame:
    """Run (or continue) every unfinished trial with Ray Tune, then aggregate; returns the per-trial table.

    `only_seeds` runs the trials of those seeds alone and leaves the aggregation to a later `--aggregate-only`
    (one job of a Slurm array per seed: the jobs then never write the same files).
    """
    out = study.out_dir
    check_same_job(
        out,
        "study",
        recorded_identity(out / "config.json"),
        study_identity(study),
        "rerun the same study config (adding seeds is fine), or give the study another name",
    )
    write_json(out / "config.json", {**study.to_dict(), "identity": study_identity(study)})
    chosen = [trial for trial in trials_of(study) if only_seeds is None or trial.seed in only_seeds]
    pending = [trial for trial in chosen if not (trial.directory(study) / TRIAL_FILE).is_file()]
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
            WandbTarget(
                study.wandb.project,
                study.wandb.mode,
                study.wandb_group,
                f"{study.name}-aggregate",
                {"study": study.name},
            ),
        )
    write_manifest(
        out / "manifest.json",
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
    """Run `trials` as Ray Tune trials; returns the errors of those that failed."""
    from ray import tune

    by_name = {trial.name: trial for trial in trials}
    entries = {
        name: {"trial": dataclasses.asdict(trial), "config": redact(trial_training_config(study, trial).to_dict())}
        for name, trial in by_name.items()
    }  # Ray Tune may write trial parameters into its own files
    with ray_session(address):
        trainable = tune.with_resources(
            tune.with_parameters(run_trial, study=study.to_dict(), trials=entries),
            lambda params: trial_resources(study, by_name[params["trial"]]),
        )
        results = tune.Tuner(
            trainable,
            param_space={"trial": tune.grid_search(list(by_name))},
            run_config=tune.RunConfig(
                name=f"{study.name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}",
                storage_path=str((study.out_dir / "ray_tune").resolve()),
                failure_config=tune.FailureConfig(max_failures=study.resources.max_failures),
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
        read_json(path)
        for trial in trials_of(study)
        if seeds is None or trial.seed in seeds
        if (path := trial.directory(study) / TRIAL_FILE).is_file()
    ]
    return pd.DataFrame([{"name": f"{row['network']}-seed{row['seed']}", **row} for row in rows])


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
    parser.set_defaults(run=run_study_command)

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
    parser.add_argument("--seeds", default="0", help="comma-separated seeds (default: %(default)s)")
    parser.add_argument("--out", required=True, help="directory of the trials and the results table")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="overrides applied to every config")
    add_ray_cluster_arguments(parser)
    parser.add_argument("--cpus-per-trial", type=float, default=1.0, help="CPUs (and torch threads) per trial")
    parser.add_argument("--gpus-per-trial", type=float, default=0.0, help="GPUs per trial (at most 1)")
    parser.add_argument("--max-failures", type=int, default=2, help="retries of a trial whose worker died")
    parser.set_defaults(run=run_tune_command)


def run_study_command(args: argparse.Namespace) -> int:
    """Run (or continue) a study and print its trials."""
    from specialize.study_config import load_study

    study = load_study(args.config, args.overrides)
    only_seeds = parse_seeds(args.seeds) if args.seeds is not None else None
    unknown = sorted(set(only_seeds or ()) - set(study.seeds))
    if unknown:
        raise UserError(f"--seeds {unknown[0]} is not among the study's seeds {study.seeds}; add it to `seeds`")
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
                    "train": {"cpus": args.cpus_per_trial, "gpus": args.gpus_per_trial},
                    "max_failures": args.max_failures,
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
