"""Segregation with its random-task control: the old path (the definition) against the stage's engine, on the demo's
network size.

Setup (not timed; the data directory is cached under --data): synthetic face and object images, 60 classes per task,
30 test images per class (3,600 test images), 48 px, built into .beton files; the demo's dual-task network (VGG16 at
width 1/16 with batch norm, configs/tiny_face_object.yaml) with random weights, which cost what trained ones do; its
one-shot sweep on the demo's 400 training images per task, with the per-class table (`class_lesion_sweep`).

Timed, each path in a process of its own (the old path leaks about 14 MB per .beton stream it opens, which would add
up over repeats in one process), the paths in turn, --repeats times; medians of wall and CPU seconds (CPU: all
threads of the process, less disturbed by other work on a shared machine), setup not counted:
- old, as `specialize segregation` and `--random-tasks` computed them before the engine (now the definition,
  `analysis.segregation.reference`): the network's analysis (the intact network and each (layer, task) unit stream
  every test .beton again and run one forward pass per fraction), then the control: a second sweep of the training
  images relabelled into the pseudo-tasks (`lesion_sweep` in process, lighter than the stage's Ray sweep), its
  ranking and the same evaluation; bootstrap tables (`segregation_tables`) for both;
- new, as the two stages compute them now: the network's analysis, then the control's (its ranking from the
  per-class table), each one `evaluate_analyses` (each test image read once per stage), the same tables;
- the new path with one control alone, and with 20 control partitions in one pass (the controls alone), against
  the old single control.
Tables are checked identical between the paths (predictions, accuracy, drops, segregation). Last, the evaluation
stage's cost at paper scale from the cost model: multiply-adds per fraction and per control partition, and the
memory plan's peak at paper-scale shapes.

    python -m benchmarks.bench_segregation [--repeats 3] [--data /tmp/specialize-bench-segregation]
    (--only PATH runs one path once: what each process of the benchmark does)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from analysis.segregation.indices import segregation_tables
from analysis.segregation.lesion_eval import INTACT_UNIT, Analysis, Unit, evaluate_analyses, lesion_plan
from analysis.segregation.reference import eval_sets, reference_analysis
from analysis.segregation.run import beton_sources
from analysis.segregation.task_groups import label_space_grouping, random_grouping, regroup
from benchmarks.bench_lesion import sweep_macs
from lightning_modules.layer_names import CONV_LAYERS
from lightning_modules.vgg import filters_per_layer, vgg16
from sweeps.class_totals import ClassTotals
from sweeps.cost_model import lesion_pass_macs, module_macs
from sweeps.engine import class_lesion_sweep, lesion_sweep
from sweeps.evaluation import SHORTCUT_SAVING
from sweeps.memory_plan import evaluation_plan
from sweeps.ranking import oneshot_ranking

REPO = Path(__file__).resolve().parent.parent
TASKS = ("face", "object")
PAPER_TEST_IMAGES = 1714 * 50 + 423 * 50  # METHOD: 50 test images per class, 1,714 identities + 423 categories
FRACTION = 0.2  # of the paper-scale cost (METHOD's top 20%)
PAPER_SWEEP_IMAGES = 2 * 6400  # METHOD: 6,400 training images per task
PAPER_TMAC_PER_S = 5.0  # the README's assumed sustained float32 throughput per GPU


def demo_network(data_root: Path, classes: int, test_per_class: int, resolution: int) -> tuple[Path, Any]:
    """The cached data directory and the demo's dual-task network on it, random weights (`load_model`'s view)."""
    from data_pipeline.build import BuildSettings, ImageCounts, build_dataset
    from data_pipeline.data_dir import DataDir
    from data_pipeline.synth import SynthSettings, generate
    from lightning_modules.checkpoint import load_model
    from lightning_modules.config import load_config
    from lightning_modules.module import TaskModule

    images, data = data_root / "images", data_root / "data"
    synth = SynthSettings(0, TASKS, classes, train_per_class=10, test_per_class=test_per_class, heldout_classes=0)
    generate(images, synth)
    build = BuildSettings(counts=ImageCounts(test=test_per_class, val=1))
    build_dataset({task: images / task for task in TASKS}, data, build)
    overrides = [f"data.dir={data}", f"data.resolution={resolution}", f"output.root={data_root / 'runs'}"]
    config = load_config(REPO / "configs" / "tiny_face_object.yaml", overrides)
    torch.manual_seed(0)
    module = TaskModule(config.to_dict(), DataDir(data).label_space(list(config.tasks)).to_dict())
    checkpoint = data_root / "random.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, checkpoint)
    return data, load_model(checkpoint)


def units_of(grouping: dict) -> list[Unit]:
    """The intact network, then every (layer, task of the grouping)."""
    return [INTACT_UNIT] + [Unit(layer, task) for layer in CONV_LAYERS for task in grouping]


def tables_of(predictions: pd.DataFrame, grouping: dict, bootstraps: int) -> dict[str, pd.DataFrame]:
    """The stage's tables of one analysis."""
    return segregation_tables(predictions, list(grouping), bootstraps, seed=0)


class Paths:
    """Both paths on one network: the sweep's ranking and per-class table, the test sources, the settings."""

    def __init__(self, loaded: Any, data: Path, table: ClassTotals, train: dict, args: argparse.Namespace):
        self.loaded, self.table, self.train, self.args = loaded, table, train, args
        self.sources = beton_sources(loaded, str(data))
        self.network = label_space_grouping(loaded.label_space)
        self.ranking = oneshot_ranking(table.task_losses(self.network))  # the sweep's ranking.parquet

    def old_analysis(self, grouping: dict, ranking: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
        """The old evaluation per unit (the definition), then the tables."""
        plan = lesion_plan(ranking, units_of(grouping), self.args.fractions)
        sets = eval_sets(self.sources, grouping, self.loaded.label_space)
        predictions = reference_analysis(self.loaded.model, sets, plan, heads=self.loaded.output_heads)
        return predictions, tables_of(predictions, grouping, self.args.bootstraps)

    def old_control(self, grouping: dict) -> tuple[pd.DataFrame, dict]:
        """The old control: a second sweep of the relabelled training images ranks the pseudo-tasks."""
        swept = lesion_sweep(self.loaded.model, regroup(self.train, grouping), heads=self.loaded.output_heads)
        return self.old_analysis(grouping, oneshot_ranking(swept))

    def table_ranking(self, grouping: dict) -> pd.DataFrame:
        """The one-shot ranking of a grouping's tasks from the sweep's per-class table."""
        return oneshot_ranking(self.table.task_losses(grouping))

    def new(self, groupings: Sequence[dict]) -> list[tuple[pd.DataFrame, dict]]:
        """Rankings from the per-class table, one engine pass for all the analyses, the tables."""
        analyses = [
            Analysis(grouping, lesion_plan(self.table_ranking(grouping), units_of(grouping), self.args.fractions))
            for grouping in groupings
        ]
        frames = evaluate_analyses(
            self.loaded.model,
            list(self.sources.values()),
            analyses,
            self.loaded.label_space,
            heads=self.loaded.output_heads,
        )
        return [(frame, tables_of(frame, a.grouping, self.args.bootstraps)) for frame, a in zip(frames, analyses)]


def timed(function: Callable[[], Any]) -> tuple[float, float, Any]:
    """(wall seconds, CPU seconds of this process, result) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = function()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def paper_scale_costs(partitions: int, budgets_gb: Sequence[float]) -> dict[str, Any]:
    """The evaluation stage at paper scale by the cost model (VGG16, 224 px, 2,137 outputs, 106,850 test images):
    multiply-adds per image and in all of the old path and the engine's, per fraction of one analysis (a control
    partition costs as much again, and on the old path also a second sweep), and the memory plan's peak."""
    model, shape = vgg16(2137).eval(), (3, 224, 224)
    macs = module_macs(model, shape)
    forward = sum(macs.values())
    sizes = filters_per_layer(model)
    conditions = 2 * len(CONV_LAYERS)  # (layer, lesioned task) of one analysis at one fraction

    def engine(fraction: float, saving: float) -> float:
        """Multiply-adds per image of one analysis' lesions at one fraction, the shortcut used where it cuts a pass
        at least `saving` times (the intact walk, once for all, not counted)."""
        passes = [lesion_pass_macs(model, layer, round(fraction * sizes[layer]), macs) for layer in CONV_LAYERS]
        return sum(2 * (shortcut if direct >= saving * shortcut else direct) for direct, shortcut in passes)

    per_image = {
        "intact_network_once_both_paths": forward,
        "old_per_fraction": conditions * forward,
        "engine_per_fraction_direct": engine(FRACTION, float("inf")),
        "engine_per_fraction_default_shortcut": engine(FRACTION, SHORTCUT_SAVING),
        "engine_per_fraction_shortcut_everywhere": engine(FRACTION, 1.0),
    }
    totals = {key: value * PAPER_TEST_IMAGES for key, value in per_image.items()}
    # the old control also swept the relabelled training images (6,400 per task) to rank its pseudo-tasks
    totals["old_control_sweep"] = sweep_macs(model, shape)["prefix_reuse_and_linearity"] * PAPER_SWEEP_IMAGES
    hours = {key: value / (PAPER_TMAC_PER_S * 1e12) / 3600 for key, value in totals.items()}
    lesions = {layer: 2 * (1 + partitions) for layer in CONV_LAYERS}  # one fraction, network + partitions
    weights = sum(p.numel() for p in model.parameters()) * 4
    plans = {}
    for budget in budgets_gb:
        plan = evaluation_plan(model, lesions, shape, int(budget * 2**30))
        plans[f"{budget:g} GiB"] = {
            "images_per_pass": plan.images_per_pass,
            "lesions_per_pass": plan.lesions_per_pass,
            "peak_activations_gib": round(plan.peak_bytes(model, shape) / 2**30, 2),
        }
    return {
        "gmac_per_image_forward": round(forward / 1e9, 2),
        "gmac_per_image": {key: round(value / 1e9, 2) for key, value in per_image.items()},
        "mac_total": {key: f"{value:.3g}" for key, value in totals.items()},
        "gpu_hours_at_5_tmac_per_s": {key: round(value, 3) for key, value in hours.items()},
        "weights_gib": round(weights / 2**30, 2),
        "memory_plan_one_fraction_network_and_partitions": {"partitions": partitions, **plans},
    }


def median_times(times: Sequence[tuple[float, float]]) -> dict[str, float]:
    """Median wall and CPU seconds of repeated runs."""
    return {
        "wall_s": round(statistics.median(wall for wall, _ in times), 2),
        "cpu_s": round(statistics.median(cpu for _, cpu in times), 2),
    }


def ratios(numerator: dict[str, float], denominator: dict[str, float]) -> dict[str, float]:
    """Wall and CPU ratios of two medians."""
    return {unit: round(numerator[unit] / denominator[unit], 2) for unit in numerator}


PATHS = ("old", "new", "new_one_control", "new_partitions")  # each repeat runs them in this order
FORWARDED = ("data", "classes", "test_per_class", "resolution", "images_per_task", "bootstraps", "partitions")


def sweep_table(loaded: Any, train: dict, root: Path) -> tuple[ClassTotals, float]:
    """The network's per-class sweep table and the seconds the sweep took, computed once and kept under `root`."""
    cache = root / "sweep"
    if not (cache / "seconds.json").is_file():
        seconds, _, table = timed(lambda: class_lesion_sweep(loaded.model, train, heads=loaded.output_heads))
        cache.mkdir(exist_ok=True)
        for name, frame in zip(("class_losses", "class_intact"), table.frames()):
            frame.to_parquet(cache / f"{name}.parquet")
        (cache / "seconds.json").write_text(json.dumps(seconds))
    frames = [pd.read_parquet(cache / f"{name}.parquet") for name in ("class_losses", "class_intact")]
    return ClassTotals.from_frames(*frames), json.loads((cache / "seconds.json").read_text())


def run_path(args: argparse.Namespace) -> dict[str, Any]:
    """One path, once (`--only`): its times, and (old, new) each analysis' tables under --data/results/PATH."""
    from sweeps.distributed import training_images

    data, loaded = demo_network(args.data, args.classes, args.test_per_class, args.resolution)
    train = training_images(loaded, data, args.images_per_task, seed=0)
    table, sweep_s = sweep_table(loaded, train, args.data)
    paths = Paths(loaded, data, table, train, args)
    control = random_grouping(loaded.label_space, seed=0)
    partitions = [random_grouping(loaded.label_space, seed) for seed in range(1, args.partitions + 1)]
    times: dict[str, tuple[float, float]] = {}
    if args.only == "old":
        wall, cpu, network = timed(lambda: paths.old_analysis(paths.network, paths.ranking))
        times["old_network"] = (wall, cpu)
        wall, cpu, old_control = timed(lambda: paths.old_control(control))
        times["old_control"] = (wall, cpu)
        results = [network, old_control]
    else:
        passes = {"new": [[paths.network], [control]], "new_one_control": [[control]], "new_partitions": [partitions]}
        wall, cpu, results = timed(
            lambda: [result for groupings in passes[args.only] for result in paths.new(groupings)]
        )
        times[args.only] = (wall, cpu)
    if args.only in ("old", "new"):
        save_results(results, args.data / "results" / args.only)
    return {"times": times, "sweep_s": sweep_s, "threads": torch.get_num_threads()}


def save_results(results: Sequence[tuple[pd.DataFrame, dict]], directory: Path) -> None:
    """Each analysis' predictions and tables, as Parquet."""
    directory.mkdir(parents=True, exist_ok=True)
    for number, (predictions, tables) in enumerate(results):
        predictions.to_parquet(directory / f"{number}_predictions.parquet")
        for name, frame in tables.items():
            frame.to_parquet(directory / f"{number}_{name}.parquet")


def identical_results(root: Path) -> dict[str, bool]:
    """Whether the old and the new path's last saved tables are the same, for both analyses."""
    names = ("predictions", "accuracy", "drops", "segregation")
    return {
        name: all(
            pd.read_parquet(root / "old" / f"{number}_{name}.parquet").equals(
                pd.read_parquet(root / "new" / f"{number}_{name}.parquet")
            )
            for number in (0, 1)
        )
        for name in names
    }


def run_in_process_of_its_own(path: str, args: argparse.Namespace) -> dict[str, Any]:
    """`--only PATH` in a new Python process; what it reports."""
    options = [part for name in FORWARDED for part in (f"--{name.replace('_', '-')}", str(getattr(args, name)))]
    command = [sys.executable, "-m", "benchmarks.bench_segregation", "--only", path, *options]
    command += ["--fractions", *map(str, args.fractions)]
    finished = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(finished.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("/tmp/specialize-bench-segregation"))
    parser.add_argument("--classes", type=int, default=60)
    parser.add_argument("--test-per-class", type=int, default=30)
    parser.add_argument("--resolution", type=int, default=48)
    parser.add_argument("--images-per-task", type=int, default=400)
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.2])
    parser.add_argument("--bootstraps", type=int, default=1000)
    parser.add_argument("--partitions", type=int, default=20, help="control partitions of the last timing")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", choices=PATHS, help="run one path once, in this process")
    args = parser.parse_args()
    if args.only:
        print(json.dumps(run_path(args)))
        return

    runs: dict[str, list[tuple[float, float]]] = {}
    load, reports = [os.getloadavg()[0]], []
    for _ in range(args.repeats):
        for path in PATHS:
            reports.append(run_in_process_of_its_own(path, args))
            for name, (wall, cpu) in reports[-1]["times"].items():
                runs.setdefault(name, []).append((wall, cpu))
            load.append(os.getloadavg()[0])
    runs["old"] = [(a[0] + b[0], a[1] + b[1]) for a, b in zip(runs["old_network"], runs["old_control"])]
    medians = {name: median_times(times) for name, times in runs.items()}
    report = {
        "config": vars(args) | {"data": str(args.data), "threads": reports[0]["threads"]},
        "load_average_1min": [round(value, 2) for value in load],
        "sweep_with_per_class_table_s": round(reports[0]["sweep_s"], 2),
        "runs": {name: [[round(w, 2), round(c, 2)] for w, c in times] for name, times in runs.items()},
        "median": medians,
        "speedup_segregation_and_one_control": ratios(medians["old"], medians["new"]),
        "one_control_vs_old": ratios(medians["new_one_control"], medians["old_control"]),
        "partitions_vs_old_single_control": ratios(medians["new_partitions"], medians["old_control"]),
        "partitions_vs_one_control_new_path": ratios(medians["new_partitions"], medians["new_one_control"]),
        "tables_identical": identical_results(args.data / "results"),
        "paper_scale": paper_scale_costs(args.partitions, budgets_gb=(8, 40)),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
