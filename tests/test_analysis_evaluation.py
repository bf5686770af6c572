"""Every analysis at once through the evaluation engine (`evaluate_analyses`): the same prediction tables, row for
row, as the definition's evaluation per unit (`analysis.segregation.reference`), for the network's tasks and control
partitions ranked from the sweep's per-class table, shared and separate heads; and from slices of the test images
joined."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from helpers_sweeps import centred, tiny_images, tiny_vgg

from analysis.segregation.indices import segregation_tables
from analysis.segregation.lesion_eval import (
    INTACT_UNIT,
    Analysis,
    TensorSource,
    Unit,
    analysis_predictions,
    analysis_readouts,
    class_names,
    evaluate_analyses,
    lesion_plan,
)
from analysis.segregation.reference import eval_sets, reference_analysis
from analysis.segregation.task_groups import label_space_grouping, random_grouping
from data_pipeline.label_space import LabelSpace
from lightning_modules.heads import OutputHeads
from sweeps.engine import class_lesion_sweep
from sweeps.evaluation import Answers, EvaluationSettings, evaluate_lesions
from sweeps.ranking import oneshot_ranking

LABEL_SPACE = LabelSpace.from_classes({"a": ["a0", "a1", "a2"], "b": ["b0", "b1", "b2"]})
LAYERS = ("conv1_1", "conv2_2", "conv4_1", "conv5_3")
FRACTIONS = [0.0, 0.2, 0.5, 1.0]


def analyses_of(model, train, groupings) -> list[Analysis]:
    """Each grouping's analysis: filters ranked from one per-class sweep table, the intact network and every (layer,
    task) at every fraction."""
    table = class_lesion_sweep(model, train, layers=LAYERS, batch_size=16)
    analyses = []
    for grouping in groupings:
        units = [INTACT_UNIT] + [Unit(layer, task) for layer in LAYERS for task in grouping]
        analyses.append(Analysis(grouping, lesion_plan(oneshot_ranking(table.task_losses(grouping)), units, FRACTIONS)))
    return analyses


@pytest.mark.parametrize("heads", [OutputHeads(), OutputHeads((3, 3))], ids=["shared", "separate"])
def test_all_analyses_at_once_give_the_definitions_tables_row_for_row(heads):
    train, test = tiny_images(seed=41, counts={"a": 30, "b": 24}), tiny_images(seed=42, counts={"a": 17, "b": 12})
    model = centred(tiny_vgg(seed=43, batch_norm=True), torch.cat([pair[0] for pair in test.values()]))
    groupings = [label_space_grouping(LABEL_SPACE), random_grouping(LABEL_SPACE, 1), random_grouping(LABEL_SPACE, 2)]
    analyses = analyses_of(model, train, groupings)
    sources = {task: TensorSource(images, labels) for task, (images, labels) in test.items()}
    settings = EvaluationSettings(images_per_pass=7, lesions_per_pass=5)
    new = evaluate_analyses(model, list(sources.values()), analyses, LABEL_SPACE, 5, heads, settings)
    for analysis, frame in zip(analyses, new):
        old = reference_analysis(model, eval_sets(sources, analysis.grouping, LABEL_SPACE), analysis.plan, 13, heads)
        pd.testing.assert_frame_equal(frame, old)
        tables = [segregation_tables(f, list(analysis.grouping), n_bootstraps=20, seed=0) for f in (frame, old)]
        for name in ("accuracy", "drops", "segregation"):
            pd.testing.assert_frame_equal(tables[0][name], tables[1][name])
    # teeth: lesions change answers, and the control partitions are other tasks with other lesions
    intact = new[0].query("layer == 'intact'")[["eval_task", "image", "prediction"]]
    merged = new[0].merge(intact, on=["eval_task", "image"], suffixes=("", "_intact"))
    assert (merged["prediction"] != merged["prediction_intact"]).mean() > 0.1
    assert not new[1]["eval_task"].isin(["a", "b"]).any() and len(new[1]) == len(new[0])
    assert any(analyses[1].plan[Unit(layer, "pseudo1")] != analyses[2].plan[Unit(layer, "pseudo1")] for layer in LAYERS)


def test_slices_of_the_test_images_join_into_the_same_tables():
    """The Ray fan-out's path: each slice answered alone, stored as a frame, joined in order, then made tables."""
    test = tiny_images(seed=44, counts={"a": 15, "b": 14})
    images = torch.cat([pair[0] for pair in test.values()])
    labels = torch.cat([pair[1] for pair in test.values()])
    model = centred(tiny_vgg(seed=45), images)
    groupings = [label_space_grouping(LABEL_SPACE), random_grouping(LABEL_SPACE, 3)]
    analyses = analyses_of(model, tiny_images(seed=46, counts={"a": 20, "b": 20}), groupings)
    readouts = analysis_readouts(analyses)
    slices = [slice(0, 8), slice(8, 9), slice(9, 29)]  # across the tasks' boundary
    parts = [
        Answers.from_frame(
            evaluate_lesions(model, [(images[part], labels[part])], readouts, groupings).frame(), len(readouts)
        )
        for part in slices
    ]
    joined = analysis_predictions(Answers.concat(parts), analyses, class_names(LABEL_SPACE))
    whole = evaluate_analyses(model, [TensorSource(images, labels)], analyses, LABEL_SPACE)
    for frame, expected in zip(joined, whole):
        pd.testing.assert_frame_equal(frame, expected)
    assert np.array_equal(np.unique(joined[0]["image"]), np.arange(15))  # numbered within each task, as before
