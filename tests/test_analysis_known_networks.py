"""Known answers of the segregation index on networks built for them (rankings from the sweep engine, in-process).

(a) two single-task networks joined block-diagonally: each filter serves one task only, so lesioning one
    task's top filters leaves the other task untouched, and the index is near 1 in every layer;
(b) one network serving two tasks that are the same task with renamed classes: every filter serves both
    alike, so the index is near 0 while the lesions still hurt;
(c) the random pseudo-task control (`--random-tasks`) on network (a): each pseudo-task holds face and object
    classes alike, so its top filters serve both pseudo-tasks and the index is near 0 where the real tasks give ~1.

METHOD's index is 1/2 [d(F|F) - d(O|F) + d(O|O) - d(F|O)]: it reaches 1 only when the cross drops vanish and
each task's own lesion abolishes it. Both tasks have 64 classes (chance 1/64, so abolition is a drop of about
0.98) and the networks are narrow (width 1/32 each). The lesion takes the top 40% of a layer of the joined
network in a task's ranking, i.e. 80% of that task's own filters. The other network's filters are not among
them: their lesions change the task's loss by exactly 0, and in these networks at most a quarter of a
layer's own filters (one of four in conv2_1) fail to raise it. So few filters left abolish the task. Trained
with 12 or 20 epochs, on one thread or two, the index stayed within 0.91-1.0 in every layer.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from helpers_analysis import CLASSES, accuracy, duplicated_network, joined_network, task_images, train_single_task

from analysis.segregation.indices import segregation_tables
from analysis.segregation.lesion_eval import (
    INTACT_UNIT,
    Analysis,
    TensorSource,
    Unit,
    analysis_readouts,
    evaluate_analyses,
    lesion_plan,
)
from analysis.segregation.run import analysis_tables
from analysis.segregation.settings import SegregationSettings
from analysis.segregation.task_groups import Grouping, label_space_grouping, null_partitions, random_grouping, regroup
from data_pipeline.label_space import LabelSpace
from lightning_modules.layer_names import CONV_LAYERS
from sweeps.engine import class_lesion_sweep, lesion_sweep
from sweeps.evaluation import evaluate_lesions
from sweeps.ranking import oneshot_ranking

pytestmark = pytest.mark.slow  # each network trains for about 20 seconds
LABEL_SPACE = LabelSpace.from_classes(
    {"face": [f"f{i}" for i in range(CLASSES)], "object": [f"o{i}" for i in range(CLASSES)]}
)
FRACTION = 0.4
RENAMED = torch.roll(torch.arange(CLASSES), 1)  # object class j is face class RENAMED[j]


@pytest.fixture(scope="module")
def joined(face_network):
    """Network (a): the face network and an object network side by side."""
    object_network = train_single_task("object")
    assert accuracy(face_network, *task_images("face", 20, 300)) > 0.85
    assert accuracy(object_network, *task_images("object", 20, 300)) > 0.85
    return joined_network(face_network, object_network)


@pytest.fixture(scope="module")
def block_diagonal_tables(joined):
    return analyse(joined, global_images(seed=200, per_class=8), global_images(seed=300, per_class=20))


def global_images(seed: int, per_class: int, same_task: bool = False) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Both tasks' images with labels in the label space's output space; `same_task`: 'object' = renamed face images."""
    if not same_task:
        return {
            task: (images, labels + LABEL_SPACE.offset(task))
            for task in LABEL_SPACE.tasks
            for images, labels in [task_images(task, per_class, seed)]
        }
    faces, face_labels = task_images("face", per_class, seed)
    renamed, renamed_labels = task_images("face", per_class, seed + 1)
    return {"face": (faces, face_labels), "object": (renamed, torch.argsort(RENAMED)[renamed_labels] + CLASSES)}


def analyse(network, train, test, grouping: Grouping | None = None, layers=CONV_LAYERS) -> pd.DataFrame:
    """Segregation tables of `network` for the tasks of `grouping` (default: the real ones), as `specialize
    segregation` computes them: rank with the sweep engine on the training images dealt into those tasks, lesion,
    evaluate the test images of those tasks, bootstrap."""
    grouping = grouping or label_space_grouping(LABEL_SPACE)
    ranking = oneshot_ranking(lesion_sweep(network, regroup(train, grouping), layers=list(layers), batch_size=64))
    units = [INTACT_UNIT] + [Unit(layer, task) for layer in layers for task in grouping]
    plan = lesion_plan(ranking, units, [FRACTION])
    sources = [TensorSource(*test[task]) for task in LABEL_SPACE.tasks]
    [predictions] = evaluate_analyses(network, sources, [Analysis(grouping, plan)], LABEL_SPACE)
    return segregation_tables(predictions, list(grouping), n_bootstraps=300, seed=0)


def pivot_drops(tables, scope: str) -> pd.DataFrame:
    drops = tables["drops"].query("scope == @scope")
    return drops.pivot_table(index="layer_index", columns=["lesioned_task", "eval_task"], values="drop")


@pytest.mark.parametrize("scope", ["all_outputs", "task_outputs"])
def test_block_diagonal_network_segregates_in_every_layer(block_diagonal_tables, scope):
    drops = pivot_drops(block_diagonal_tables, scope)
    assert np.abs(drops[[("face", "object"), ("object", "face")]].to_numpy()).max() <= 0.02  # other task untouched
    assert drops[[("face", "face"), ("object", "object")]].to_numpy().min() > 0.85  # own task (nearly) abolished
    si = block_diagonal_tables["segregation"].query("scope == @scope").set_index("layer_index")
    assert list(si.index) == list(range(1, 14))
    assert si["si"].min() > 0.9 and si["si"].mean() > 0.93
    assert (si["si_high"] > 0.93).all() and (si["si_low"] > 0.85).all()


def test_network_serving_both_tasks_alike_has_index_near_zero(face_network):
    network = duplicated_network(face_network, RENAMED)
    tables = analyse(
        network,
        global_images(seed=200, per_class=8, same_task=True),
        global_images(seed=300, per_class=20, same_task=True),
    )
    drops = pivot_drops(tables, "task_outputs")
    assert drops[("face", "face")].mean() > 0.2  # lesions hurt...
    si = tables["segregation"].query("scope == 'task_outputs'")
    assert si["si"].abs().max() < 0.1  # ...both tasks alike
    assert ((si["si_low"] <= 0.0) & (si["si_high"] >= 0.0)).mean() >= 0.9


def test_random_pseudo_tasks_on_the_segregated_network_give_an_index_near_zero(joined, block_diagonal_tables):
    grouping = random_grouping(LABEL_SPACE, seed=0)
    mixed = [np.isin(members, np.arange(CLASSES)).mean() for members in grouping.values()]  # share of face classes
    assert all(0.3 < share < 0.7 for share in mixed)
    layers = ("conv1_2", "conv3_1", "conv4_2", "conv5_3")
    tables = analyse(
        joined, global_images(seed=200, per_class=8), global_images(seed=300, per_class=20), grouping, layers
    )
    random_si = tables["segregation"].query("scope == 'all_outputs'").set_index("layer")["si"]
    real_si = block_diagonal_tables["segregation"].query("scope == 'all_outputs'").set_index("layer")["si"]
    assert list(random_si.index) == list(layers)
    drops = pivot_drops(tables, "all_outputs")
    assert drops[[("pseudo1", "pseudo1"), ("pseudo2", "pseudo2")]].to_numpy().min() > 0.2  # the lesions hurt...
    assert random_si.abs().max() < 0.15, random_si.to_dict()  # ...both pseudo-tasks alike,
    assert (real_si[list(layers)] > 0.9).all()  # where the real tasks are segregated


# The permutation null (`specialize segregation --null-partitions`): the network's tasks and P random partitions of
# the classes ranked from one per-class sweep and evaluated in one pass of the engine, reduced as the command does.
NULL_LAYERS = CONV_LAYERS[2:]  # conv2_1 on


def with_null_partitions(network, label_space, observed, partitions, train, test, layers) -> pd.DataFrame:
    """The command's segregation table (index, null band, p-value; top-1 over all outputs) of `observed` against
    `partitions`: one per-class sweep ranks every grouping, one pass of the engine answers them all."""
    totals = class_lesion_sweep(network, train, layers=list(layers), batch_size=64)
    analyses = [
        Analysis(
            grouping,
            lesion_plan(
                oneshot_ranking(totals.task_losses(grouping)),
                [INTACT_UNIT] + [Unit(layer, task) for layer in layers for task in grouping],
                [FRACTION],
            ),
        )
        for grouping in [observed, *partitions]
    ]
    batches = TensorSource(*test).batches(256)
    answers = evaluate_lesions(network, batches, analysis_readouts(analyses), [a.grouping for a in analyses])
    settings = SegregationSettings(fraction=FRACTION, n_bootstraps=20)
    tables, _ = analysis_tables(answers, analyses, label_space, settings, CONV_LAYERS)
    return tables["segregation"].query("scope == 'all_outputs'").set_index("layer")


def test_block_diagonal_network_beats_every_null_partition_from_conv2_1_on(joined):
    """Each filter serves one task: every random partition mixes the tasks' classes, so its index is near 0, and the
    network's (~1) exceeds all 20: p = 1/21 < 0.05 at every layer."""
    train, test = global_images(seed=200, per_class=4), global_images(seed=301, per_class=2)
    test = tuple(torch.cat([test[task][i] for task in LABEL_SPACE.tasks]) for i in (0, 1))
    partitions = null_partitions(LABEL_SPACE, 20, network_seed=0)
    table = with_null_partitions(
        joined, LABEL_SPACE, label_space_grouping(LABEL_SPACE), partitions, train, test, NULL_LAYERS
    )
    assert list(table.index) == list(NULL_LAYERS) and (table["n_null"] == 20).all()
    # ranked on 4 images per class (the tests above: 8), a few of conv2_2's and conv3_2's own filters rank below
    # the other network's: index 0.70-0.72 there (measured), 0.93-0.98 elsewhere; the null is what is tested here
    assert (table["si"] > 0.6).all() and table["si"].median() > 0.9, table["si"].to_dict()
    assert table["null_mean"].abs().max() < 0.15 and (table["null_high"] < 0.5).all(), table["null_high"].to_dict()
    assert table["p_value"].tolist() == pytest.approx([1 / 21] * len(NULL_LAYERS))


def test_a_random_split_of_one_tasks_classes_is_not_significant(face_network):
    """'Tasks' that are a random split of the face network's classes: the observed split is one more draw of the
    null, so no layer's p falls below 0.01 (99 partitions: the least p is 0.01), and the index sits in the band."""
    split = LabelSpace.from_classes({"a": [f"f{i}" for i in range(32)], "b": [f"f{i}" for i in range(32, 64)]})
    drawn = random_grouping(split, seed=2026)
    observed = {"a": drawn["pseudo1"], "b": drawn["pseudo2"]}
    layers = ("conv1_2", "conv3_1", "conv4_2", "conv5_3")
    train, test = task_images("face", 6, seed=200), task_images("face", 3, seed=300)
    partitions = null_partitions(split, 99, network_seed=0)
    table = with_null_partitions(face_network, split, observed, partitions, {"face": train}, test, layers)
    assert list(table.index) == list(layers) and (table["n_null"] == 99).all()
    assert (table["p_value"] > 0.01).all(), table["p_value"].to_dict()
    assert ((table["si"] >= table["null_low"]) & (table["si"] <= table["null_high"])).mean() >= 0.75
    assert table["null_mean"].abs().max() < 0.1  # splits of one task: no segregation expected
