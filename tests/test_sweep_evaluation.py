"""The evaluation engine against its definition (`sweeps.reference.reference_predictions`: a hook zeroes the filters,
one full forward pass per lesion and batch): the same answers, image by image, at every layer, for shared and
separate heads, with and without batch norm, fractions from 0 to 1, odd pass sizes and the shortcut; tests that a
filter index off by one, lesions mixed up within a pass or a lesion before batch norm would be caught; passes within
the memory plan; identical lesions run once; slices of the images join into the whole."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from helpers_sweeps import centred, resolution, tiny_images, tiny_network, tiny_vgg
from torch import nn

import sweeps.evaluation as evaluation
import sweeps.lesions
from lightning_modules.heads import OutputHeads
from lightning_modules.layer_names import CONV_LAYERS
from lightning_modules.units import filters_per_unit, lesion_units
from lightning_modules.vgg import conv_indices, filters_per_layer
from sweeps.evaluation import (
    INTACT,
    SHORTCUT_SAVING,
    Answers,
    EvaluationSettings,
    Lesion,
    Readout,
    evaluate_lesions,
    lesions_by_layer,
    shortcut_sizes,
)
from sweeps.layer_split import split_at
from sweeps.memory_plan import evaluation_plan
from sweeps.reference import reference_predictions

GROUPINGS = [{"a": [0, 1, 2], "b": [3, 4, 5]}, {"p": [0, 4, 5], "q": [1, 2, 3]}]  # the real tasks, a control
FRACTIONS = (0.0, 0.05, 0.2, 0.5, 1.0)
HEADS = {"shared": OutputHeads(), "separate": OutputHeads((3, 3))}
IMAGE_SHAPE = (3, 32, 32)


def evaluation_images(
    seed: int = 21, counts: tuple[int, int] = (14, 13), size: int = 32
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images of both tasks (by default 27, an odd number, so passes have ragged ends) of `size` px."""
    data = tiny_images(seed=seed, counts=dict(zip("ab", counts)), size=size)
    return torch.cat([pair[0] for pair in data.values()]), torch.cat([pair[1] for pair in data.values()])


def readouts_of(model: nn.Module, seed: int = 0, fractions: tuple[float, ...] = FRACTIONS) -> list[Readout]:
    """The segregation analysis' readouts for both groupings: the intact network, then per layer, task and fraction the
    top fraction of a random ranking of the layer's filters. The control's task p ranks like task a, so its lesions
    repeat a's (the engine runs them once); fraction 0 lesions nothing (the intact network again)."""
    generator = torch.Generator().manual_seed(seed)
    sizes = filters_per_unit(model)
    rankings = {
        (layer, task): torch.randperm(size, generator=generator).tolist()
        for layer, size in sizes.items()
        for task in ("a", "b", "q")
    }
    rankings.update({(layer, "p"): rankings[(layer, "a")] for layer in sizes})
    readouts = []
    for number, grouping in enumerate(GROUPINGS):
        readouts.append(Readout(INTACT, number))
        for layer, size in sizes.items():
            for task in grouping:
                for fraction in fractions:
                    top = rankings[(layer, task)][: int(np.floor(fraction * size + 0.5))]
                    readouts.append(Readout(Lesion.of(layer, top), number))
    return readouts


def definition_answers(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, readouts: list[Readout], heads: OutputHeads
) -> Answers:
    """The definition's answers: each grouping's tasks' images (batches of 4) through `reference_predictions`, with
    every lesion of that grouping's readouts."""
    prediction = np.full((len(readouts), len(labels)), -2, dtype=np.int64)
    within = prediction.copy()
    for number, grouping in enumerate(GROUPINGS):
        mine = [row for row, readout in enumerate(readouts) if readout.grouping == number]
        lesions = {readouts[row].lesion: {} for row in mine}
        lesions.update({lesion: {lesion.layer: lesion.filters} for lesion in lesions if lesion.layer})
        for classes in grouping.values():
            outputs = torch.tensor(classes)
            keep = torch.isin(labels, outputs)
            task_images, task_labels = images[keep], labels[keep]
            batches = [(task_images[i : i + 4], task_labels[i : i + 4]) for i in range(0, len(task_labels), 4)]
            answers = reference_predictions(model, batches, outputs, lesions, heads)
            for row in mine:
                _, prediction[row, keep.numpy()], within[row, keep.numpy()] = answers[readouts[row].lesion]
    assert (prediction >= 0).all() and (within >= 0).all()
    return Answers(labels.numpy(), prediction, within)


def mismatches(answers: Answers, expected: Answers, rows: list[int] | None = None) -> int:
    """Images x readouts (of `rows`, default all) whose answer (top-1, or top-1 within the task) differs."""
    assert np.array_equal(answers.labels, expected.labels)
    rows = list(range(len(answers.prediction))) if rows is None else rows
    differ = (answers.prediction[rows] != expected.prediction[rows]) | (answers.within[rows] != expected.within[rows])
    return int(differ.sum())


def rows_of(readouts: list[Readout], layer: str) -> list[int]:
    return [row for row, readout in enumerate(readouts) if readout.lesion.layer == layer]


@pytest.fixture(scope="module", params=[(False, "shared"), (True, "shared"), (False, "separate"), (True, "separate")])
def case(request):
    """A tiny VGG16 (with or without batch norm, answers centred), its heads, the test images, readouts and the
    definition's answers."""
    batch_norm, heads = request.param
    images, labels = evaluation_images()
    model = centred(tiny_vgg(seed=31, batch_norm=batch_norm), images)
    readouts = readouts_of(model)
    return (
        model,
        HEADS[heads],
        images,
        labels,
        readouts,
        definition_answers(model, images, labels, readouts, HEADS[heads]),
    )


PLANS = {
    "1 image, 16 lesions per pass": EvaluationSettings(images_per_pass=1, lesions_per_pass=16),
    "7 images, 3 lesions per pass": EvaluationSettings(images_per_pass=7, lesions_per_pass=3),
    "13 images, lesions per pass from a memory budget": EvaluationSettings(images_per_pass=13, memory_budget=3_000_000),
    "the shortcut for every lesion": EvaluationSettings(images_per_pass=7, lesions_per_pass=5, shortcut_saving=1.0),
}


@pytest.mark.parametrize("plan", list(PLANS))
def test_engine_answers_equal_the_definition_image_by_image(case, plan):
    model, heads, images, labels, readouts, expected = case
    batches = [(images[i : i + 5], labels[i : i + 5]) for i in range(0, len(labels), 5)]  # read in other batches
    answers = evaluate_lesions(model, batches, readouts, GROUPINGS, heads, PLANS[plan])
    assert answers.prediction.shape == answers.within.shape == (len(readouts), 27)
    assert mismatches(answers, expected) == 0


def test_the_comparison_has_teeth(case, monkeypatch):
    """Lesions change answers in every layer and the groupings' tasks differ; a filter index off by one, lesions mixed
    up within a pass, or (with batch norm) a lesion of the conv's output rather than the ReLU's would be seen."""
    model, heads, images, labels, readouts, expected = case
    intact = {readout.grouping: row for row, readout in enumerate(readouts) if readout.lesion == INTACT}
    for layer in CONV_LAYERS:
        rows = rows_of(readouts, layer)
        unlesioned = [intact[readouts[row].grouping] for row in rows]
        assert (expected.prediction[rows] != expected.prediction[unlesioned]).any(), layer
    assert (expected.within[intact[0]] != expected.within[intact[1]]).any()  # the control's tasks are other tasks
    settings = EvaluationSettings(images_per_pass=9, lesions_per_pass=4)

    sizes = filters_per_layer(model)
    shifted = [
        Readout(Lesion.of(layer, [(f + 1) % sizes[layer] for f in readout.lesion.filters]), readout.grouping)
        if (layer := readout.lesion.layer)
        else readout
        for readout in readouts
    ]
    off_by_one = evaluate_lesions(model, [(images, labels)], shifted, GROUPINGS, heads, settings)
    for layer in CONV_LAYERS:
        assert mismatches(off_by_one, expected, rows_of(readouts, layer)) > 0, layer

    direct = evaluation.direct_logits
    monkeypatch.setattr(evaluation, "direct_logits", lambda *args: direct(*args).roll(1, dims=0))
    mixed_up = evaluate_lesions(model, [(images, labels)], readouts, GROUPINGS, heads, settings)
    assert mismatches(mixed_up, expected) > 0
    monkeypatch.undo()

    if any(isinstance(module, nn.BatchNorm2d) for module in model.features) and heads.shared:
        on_convs = {  # hooks on the convs: before batch norm
            name: replace(unit, hook=f"features.{index}")
            for (name, unit), index in zip(lesion_units(model).items(), conv_indices(model).values())
        }
        monkeypatch.setattr(sweeps.lesions, "lesion_units", lambda _: on_convs)
        before_batch_norm = definition_answers(model, images, labels, readouts, heads)
        monkeypatch.undo()
        assert mismatches(before_batch_norm, expected) > 0


@pytest.mark.parametrize("arch", ["resnet18", "alexnet"])
def test_engine_answers_equal_the_definition_at_every_unit_of_other_architectures(arch):
    """Every unit of ResNet-18 (convs inside blocks by the shortcut or directly; block outputs, read by the next block
    and its skip path, by a plain suffix pass with the skip input reused) and of AlexNet, against hooks that zero the
    channels and run the whole network: the same answers, image by image, whatever the plan."""
    images, labels = evaluation_images(counts=(6, 5), size=resolution(arch))
    model = centred(tiny_network(arch, seed=37), images)
    readouts = readouts_of(model, fractions=(0.3,))
    expected = definition_answers(model, images, labels, readouts, OutputHeads())
    intact = {readout.grouping: row for row, readout in enumerate(readouts) if readout.lesion == INTACT}
    for layer in lesion_units(model):  # lesions change answers at every unit: the comparison has teeth
        rows = rows_of(readouts, layer)
        assert (expected.prediction[rows] != expected.prediction[[intact[readouts[r].grouping] for r in rows]]).any()
    for settings in (
        EvaluationSettings(images_per_pass=4, lesions_per_pass=3),
        EvaluationSettings(images_per_pass=5, lesions_per_pass=7, shortcut_saving=1.0),
    ):
        batches = [(images[i : i + 3], labels[i : i + 3]) for i in range(0, len(labels), 3)]
        answers = evaluate_lesions(model, batches, readouts, GROUPINGS, settings=settings)
        assert mismatches(answers, expected) == 0, settings


def test_the_shortcut_goes_where_the_cost_model_says_it_pays():
    """By default, the lesions of conv5_3 (whose next map, fc6, is most of the rest of the network) of 2 and 6 of its
    32 filters; neither larger ones nor any of conv1_2's (whose next map is a small part of the rest)."""
    model = tiny_vgg(seed=36)
    sizes = filters_per_layer(model)
    lesions = [Lesion.of(layer, range(round(f * n) or 1)) for layer, n in sizes.items() for f in (0.05, 0.2, 0.5, 1)]
    by_layer = lesions_by_layer(lesions, CONV_LAYERS)
    chosen = shortcut_sizes(model, by_layer, IMAGE_SHAPE, SHORTCUT_SAVING)
    assert chosen["conv5_3"] == {2, 6} and chosen["conv1_2"] == set()
    every = shortcut_sizes(model, by_layer, IMAGE_SHAPE, 1.0)
    assert all(every[layer] == {len(lesion.filters) for _, lesion in by_layer[layer]} for layer in CONV_LAYERS)
    assert not any(shortcut_sizes(model, by_layer, IMAGE_SHAPE, float("inf")).values())


def test_lesions_are_canonical_and_identical_ones_run_once(monkeypatch):
    assert Lesion.of("conv2_1", [5, 1, 5]) == Lesion("conv2_1", (1, 5)) and Lesion.of("conv2_1", []) is INTACT
    images, labels = evaluation_images()
    model = centred(tiny_vgg(seed=32), images)
    readouts = readouts_of(model)
    run: list[Lesion] = []

    def recording(split, linear_input, context, group, direct=evaluation.direct_logits):
        run.extend(lesion for _, lesion in group)
        return direct(split, linear_input, context, group)

    monkeypatch.setattr(evaluation, "direct_logits", recording)
    settings = EvaluationSettings(lesions_per_pass=6, shortcut_saving=float("inf"))  # every lesion passes here
    answers = evaluate_lesions(model, [(images, labels)], readouts, GROUPINGS, settings=settings)
    distinct = {readout.lesion for readout in readouts} - {INTACT}
    assert len(run) == len(distinct) == len(set(run)) and set(run) == distinct
    assert len(distinct) < len(readouts) - 60  # p repeats a, fraction 0 is intact, small fractions coincide
    first = {}
    for row, readout in enumerate(readouts):  # a repeated lesion gives the same answers wherever it is read out
        if (readout.lesion, readout.grouping) in first:
            assert np.array_equal(
                answers.prediction[row], answers.prediction[first[(readout.lesion, readout.grouping)]]
            )
        first.setdefault((readout.lesion, readout.grouping), row)


def test_passes_hold_what_the_memory_plan_allows(monkeypatch):
    images, labels = evaluation_images()
    model = centred(tiny_vgg(seed=33), images)
    readouts = readouts_of(model)
    counts = {layer: len({r.lesion for r in readouts if r.lesion.layer == layer}) for layer in CONV_LAYERS}
    layer_of = {id(split_at(model, layer).linear): layer for layer in CONV_LAYERS}
    passes: list[tuple[str, int, int]] = []  # layer, lesions, images of each pass

    def recording(split, linear_input, context, group, direct=evaluation.direct_logits):
        passes.append((layer_of[id(split.linear)], len(group), len(linear_input)))
        return direct(split, linear_input, context, group)

    monkeypatch.setattr(evaluation, "direct_logits", recording)
    plans = {}
    for budget in (400_000, 4_000_000):
        plans[budget] = plan = evaluation_plan(model, counts, IMAGE_SHAPE, budget)
        assert plan.peak_bytes(model, IMAGE_SHAPE) <= budget
        passes.clear()
        settings = EvaluationSettings(memory_budget=budget, shortcut_saving=float("inf"))  # every pass direct
        evaluate_lesions(model, [(images, labels)], readouts, GROUPINGS, settings=settings)
        assert all(k <= plan.lesions_per_pass[layer] and b <= plan.images_per_pass for layer, k, b in passes), budget
        batches = -(-27 // plan.images_per_pass)
        assert sum(k for layer, k, _ in passes if layer == "conv3_1") == batches * counts["conv3_1"]  # each once
        assert max(k for _, k, _ in passes) > 1  # lesions do share passes
    small, large = plans[400_000], plans[4_000_000]
    assert small.images_per_pass < large.images_per_pass and small.lesions_per_pass != large.lesions_per_pass


def test_answers_of_slices_join_into_the_whole_and_survive_their_frames():
    images, labels = evaluation_images()
    model = centred(tiny_vgg(seed=34, batch_norm=True), images)
    readouts = readouts_of(model)
    settings = EvaluationSettings(images_per_pass=8, lesions_per_pass=4)
    whole = evaluate_lesions(model, [(images, labels)], readouts, GROUPINGS, settings=settings)
    parts = [
        evaluate_lesions(model, [(images[part], labels[part])], readouts, GROUPINGS, settings=settings)
        for part in (slice(0, 10), slice(10, 11), slice(11, 27))
    ]
    stored = [Answers.from_frame(part.frame(), len(readouts)) for part in parts]
    for joined in (Answers.concat(parts), Answers.concat(stored)):
        assert mismatches(joined, whole) == 0
    assert list(parts[0].frame().columns) == list(Answers.FRAME_COLUMNS)
    empty = evaluate_lesions(model, [], readouts, GROUPINGS)
    assert empty.prediction.shape == (len(readouts), 0) and len(empty.labels) == 0


def test_impossible_requests_are_refused():
    images, labels = evaluation_images()
    model = centred(tiny_vgg(seed=35), images)
    batches = [(images, labels)]
    with pytest.raises(ValueError, match="outside the 2 given"):
        evaluate_lesions(model, batches, [Readout(INTACT, 2)], GROUPINGS)
    with pytest.raises(ValueError, match="8 filters"):
        evaluate_lesions(model, batches, [Readout(Lesion.of("conv2_1", [8]))], GROUPINGS)
    with pytest.raises(ValueError, match="cannot lesion fc6"):
        evaluate_lesions(model, batches, [Readout(Lesion.of("fc6", [0]))], GROUPINGS)
    with pytest.raises(ValueError, match="shares classes"):
        evaluate_lesions(model, batches, [Readout(INTACT)], [{"x": [0, 1], "y": [1, 2]}])
    with pytest.raises(ValueError, match="outside the model's 6 outputs"):
        evaluate_lesions(model, batches, [Readout(INTACT)], [{"x": [6]}])
