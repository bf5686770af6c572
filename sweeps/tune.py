"""`specialize tune`: Ray Tune runs many trainings at once: a grid over configs (task pairs) and seeds.

Each trial is one `lightning_modules.train.train` run in its own run directory
(`<out>/<config name>-seed<seed>`), so a rerun of the same command continues unfinished runs from their
last checkpoint and finishes finished ones at once. The table of final per-task metrics of every run is
written to `<out>/tune_results.parquet` (and `.json`), beside `config.json` and `manifest.json`.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, Sequence

from common.errors import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `tune` subcommand."""
    parser = subparsers.add_parser(
        "tune", help="train a grid of configs (task pairs) x seeds as parallel Ray Tune trials",
        description=__doc__.splitlines()[0])
    parser.add_argument("--config", dest="configs", action="append", required=True,
                        help="YAML training config; repeat for several task pairs")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds (default: %(default)s)")
    parser.add_argument("--out", required=True, help="root of the run directories and the results table")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="overrides applied to every config")
    parser.add_argument("--address", help="Ray cluster to join (default: start a local one)")
    parser.add_argument("--cpus-per-trial", type=float, default=1.0, help="CPUs (and torch threads) per trial")
    parser.add_argument("--gpus-per-trial", type=float, default=0.0, help="GPUs per trial (trainer.devices)")
    parser.add_argument("--max-failures", type=int, default=2, help="retries of a trial whose worker died")
    parser.set_defaults(run=run)


def parse_seeds(text: str) -> list[int]:
    """'0,1,2' -> [0, 1, 2]; UserError on anything else."""
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"--seeds must be comma-separated integers, e.g. 0,1,2 (got {text!r})") from None
    if not seeds:
        raise UserError("--seeds is empty; give at least one seed, e.g. --seeds 0")
    return seeds


def trial_configs(configs: Sequence[str], seeds: Sequence[int], overrides: Sequence[str], out: Path) -> list[dict]:
    """Resolved training configs (as dicts, with absolute paths, secrets redacted) for every config x seed."""
    from common.redact import redact
    from lightning_modules.config import load_config

    trials = []
    for config_path in configs:
        for seed in seeds:
            config = load_config(config_path, list(overrides))
            data = config.to_dict()
            data["seed"] = seed
            data["data"]["dir"] = str(Path(data["data"]["dir"]).resolve())
            data["output"].update(root=str(out.resolve()), run_name=f"{config.name}-seed{seed}")
            data["trainer"]["progress_bar"] = False
            trials.append(redact(data))  # Ray Tune writes trial configs into its own files
    names = [trial["output"]["run_name"] for trial in trials]
    if len(set(names)) != len(names):
        raise UserError("two --config files share a `name`; give each task pair's config its own name")
    return trials


def train_trial(params: dict[str, Any]) -> None:
    """A Tune function trainable: train one resolved config and report its final metrics."""
    import torch
    from ray import tune

    from lightning_modules.config import config_from_dict
    from lightning_modules.train import train
    from common.io import read_json

    torch.set_num_threads(max(1, int(params["cpus"])))
    run_dir = train(config_from_dict(params["config"]))
    summary = read_json(run_dir / "summary.json")
    tune.report({"run_dir": str(run_dir), "best_val_loss": summary["best_val_loss"], **summary["metrics"]})


def tune_trainings(configs: Sequence[str], seeds: Sequence[int], out: str | os.PathLike, overrides: Sequence[str] = (),
                   address: str | None = None, cpus_per_trial: float = 1.0, gpus_per_trial: float = 0.0,
                   max_failures: int = 2) -> "Any":
    """Run every config x seed as a Ray Tune trial; returns the results table (one row per run)."""
    import pandas as pd
    from ray import tune

    from common.io import write_json, write_parquet
    from common.manifest import write_manifest
    from common.ray_runner import ray_session

    out = Path(out)
    trials = trial_configs(configs, seeds, overrides, out)
    if gpus_per_trial:
        for trial in trials:
            trial["trainer"].update(accelerator="gpu", devices=max(1, int(gpus_per_trial)))
    trainable = tune.with_resources(train_trial, {"cpu": cpus_per_trial, "gpu": gpus_per_trial})
    with ray_session(address):
        grid = tune.Tuner(
            trainable,
            param_space={"config": tune.grid_search(trials), "cpus": cpus_per_trial},
            run_config=tune.RunConfig(name="tune", storage_path=str((out / "ray_tune").resolve()),
                                      failure_config=tune.FailureConfig(max_failures=max_failures), verbose=1),
        ).fit()
    failed = [result.error for result in grid if result.error is not None]
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(trials)} trials failed; first error: {failed[0]}")
    table = pd.DataFrame([_result_row(result) for result in grid]).sort_values("run_name", ignore_index=True)
    write_parquet(out / "tune_results.parquet", table)
    write_json(out / "tune_results.json", table.to_dict(orient="records"))
    write_json(out / "config.json", {"configs": list(configs), "seeds": list(seeds), "overrides": list(overrides),
                                     "cpus_per_trial": cpus_per_trial, "gpus_per_trial": gpus_per_trial})
    write_manifest(out / "manifest.json", "tune", seeds=list(seeds), runs=table["run_dir"].tolist())
    return table


def _result_row(result: Any) -> dict[str, Any]:
    """One results-table row: the run's name, tasks, seed and its final reported metrics."""
    config = result.config["config"]
    metrics = {key: value for key, value in result.metrics.items()
               if key == "run_dir" or key == "best_val_loss" or "/" in key}
    return {"run_name": config["output"]["run_name"], "config": config["name"], "tasks": "+".join(config["tasks"]),
            "seed": config["seed"], **metrics}


def run(args: argparse.Namespace) -> int:
    """Run the grid and print the results table."""
    table = tune_trainings(args.configs, parse_seeds(args.seeds), args.out, args.overrides, address=args.address,
                           cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial,
                           max_failures=args.max_failures)
    columns = [c for c in table.columns if c in ("run_name", "best_val_loss") or c.startswith("val/") and "top1" in c]
    print(table[columns].to_string(index=False))
    print(f"results: {Path(args.out) / 'tune_results.parquet'}")
    return 0
