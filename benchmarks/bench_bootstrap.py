"""Time of the segregation tables (accuracies, drops, indices, 1,000-resample CIs) for paper-sized test sets.

Random per-image predictions for a face test set (1,714 identities x 50 images) and an object test set
(423 categories x 50 images), under the intact network and 13 layers x 2 lesioned tasks at one fraction:
27 conditions x 2 accuracy scopes x 107,000 images. Reports the seconds of `segregation_tables` as a whole
and of the bootstrap alone (target: seconds, not minutes).

    python -m benchmarks.bench_bootstrap [--bootstraps 1000] [--per-class 50]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import pandas as pd

from analysis.bootstrap import bootstrap_accuracies
from analysis.segregation.indices import INTACT_LAYER, NO_TASK, PREDICTION_COLUMNS, segregation_tables
from lightning_modules.layer_names import CONV_LAYERS

TEST_CLASSES = {"face": 1714, "object": 423}
FRACTION = 0.2


def random_predictions(per_class: int, rng: np.random.Generator) -> pd.DataFrame:
    """Per-image predictions of every condition, right with probability 0.7, in the analysis' columns."""
    conditions = [(INTACT_LAYER, NO_TASK, 0.0)] + [
        (layer, task, FRACTION) for layer in CONV_LAYERS for task in TEST_CLASSES
    ]
    frames, offset = [], 0
    for eval_task, classes in TEST_CLASSES.items():
        labels = np.repeat(np.arange(classes), per_class) + offset
        offset += classes
        for layer, lesioned, fraction in conditions:
            right = rng.random(labels.size) < 0.7
            frames.append(
                pd.DataFrame(
                    {
                        "layer": layer,
                        "lesioned_task": lesioned,
                        "fraction": fraction,
                        "eval_task": eval_task,
                        "image": np.arange(labels.size),
                        "class": labels,
                        "label": labels,
                        "prediction": np.where(right, labels, -1),
                        "correct": right,
                        "prediction_within_task": np.where(right, labels, -1),
                        "correct_within_task": right,
                    },
                    columns=list(PREDICTION_COLUMNS),
                )
            )
    return pd.concat(frames, ignore_index=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstraps", type=int, default=1000)
    parser.add_argument("--per-class", type=int, default=50)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    predictions = random_predictions(args.per_class, rng)
    start = time.perf_counter()
    tables = segregation_tables(predictions, list(TEST_CLASSES), n_bootstraps=args.bootstraps, seed=0)
    whole = time.perf_counter() - start

    conditions = 2 * (1 + len(CONV_LAYERS) * len(TEST_CLASSES))  # x 2 scopes
    start = time.perf_counter()
    for classes in TEST_CLASSES.values():
        labels = np.repeat(np.arange(classes), args.per_class)
        bootstrap_accuracies(rng.random((conditions, labels.size)) < 0.7, labels, args.bootstraps, rng)
    bootstrap = time.perf_counter() - start
    print(
        json.dumps(
            {
                "config": vars(args),
                "predictions_rows": len(predictions),
                "segregation_tables_s": round(whole, 2),
                "bootstrap_only_s": round(bootstrap, 2),
                "segregation_rows": len(tables["segregation"]),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
