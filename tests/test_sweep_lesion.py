"""The lesion engine against its naive definition, at every conv layer, with and without batch norm."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers_sweeps import tiny_images, tiny_vgg
from torch import nn

from lightning_modules.heads import OutputHeads
from lightning_modules.layer_names import CONV_LAYERS
from lightning_modules.vgg import filters_per_layer, relu_indices
from sweeps.class_totals import RESULT_COLUMNS
from sweeps.engine import lesion_sweep
from sweeps.lesions import lesioned
from sweeps.reference import reference_lesion_sweep

KEYS = ["layer", "filter", "task"]


@pytest.mark.parametrize("batch_norm", [False, True], ids=["plain", "batchnorm"])
def test_fast_sweep_equals_naive_reference_at_every_layer(batch_norm):
    model, data = tiny_vgg(batch_norm=batch_norm), tiny_images()
    # Odd pass sizes so that batches and lesion groups have ragged ends.
    fast = lesion_sweep(model, data, batch_size=7, lesions_per_pass=3)
    reference = reference_lesion_sweep(model, data, batch_size=7)

    assert list(fast.columns) == list(RESULT_COLUMNS)
    sizes = filters_per_layer(model)
    assert len(fast) == len(reference) == 2 * sum(sizes.values())
    # Rows are matched by what they say they are (layer, filter, task), not by position, so a mislabelled row fails.
    both = fast.merge(reference, on=KEYS, how="outer", suffixes=("", "_ref"), validate="one_to_one", indicator=True)
    assert (both["_merge"] == "both").all()
    assert (both["layer_index"] == both["layer_index_ref"]).all()
    assert (both["layer_index"] == [CONV_LAYERS.index(layer) + 1 for layer in both["layer"]]).all()
    for column in ("loss", "intact_loss"):
        assert abs(both[column] - both[f"{column}_ref"]).max() < 1e-4, column
    for column in ("accuracy", "intact_accuracy"):
        assert (both[column] == both[f"{column}_ref"]).all(), column
    # The comparison has teeth: the tasks differ, and lesions change the loss by far more than the tolerance.
    intact = reference.groupby("task")["intact_loss"].first()
    assert abs(intact["a"] - intact["b"]) > 1e-2
    for layer in CONV_LAYERS:
        rows = fast[fast.layer == layer]
        assert abs(rows.loss - rows.intact_loss).max() > 1e-2, layer
        for task in ("a", "b"):  # the filters' losses on one task are not all alike, so a swap of filters would show
            assert rows[rows.task == task].loss.std() > 1e-3, (layer, task)


def plain_forward(model, images: torch.Tensor, layer: str | None = None, filters=(), before_batch_norm=False):
    """Logits of a tiny VGG16 computed from its weights with plain functional ops, one conv block at a time, with
    `filters` of conv layer `layer` zeroed after batch norm and ReLU (or, `before_batch_norm`, right after the conv).

    Shares nothing with the lesion code but the weights: batch norm is written out from its running statistics.
    """
    x, convs_seen = images, 0
    modules = list(model.features)
    for module in modules:
        if isinstance(module, nn.Conv2d):
            x = F.conv2d(x, module.weight, module.bias, padding=1)
            convs_seen += 1
            this_layer = CONV_LAYERS[convs_seen - 1] == layer
            if this_layer and before_batch_norm:
                x = x.clone()
                x[:, list(filters)] = 0.0
        elif isinstance(module, nn.BatchNorm2d):
            scale = module.weight / torch.sqrt(module.running_var + module.eps)
            x = (x - module.running_mean[None, :, None, None]) * scale[None, :, None, None] + module.bias[
                None, :, None, None
            ]
        elif isinstance(module, nn.ReLU):
            x = torch.clamp(x, min=0.0)
            if this_layer and not before_batch_norm:
                x = x.clone()
                x[:, list(filters)] = 0.0
        elif isinstance(module, nn.MaxPool2d):
            x = F.max_pool2d(x, 2)
    x = F.adaptive_avg_pool2d(x, (7, 7)).flatten(1)
    hidden = [m for m in model.classifier if isinstance(m, nn.Linear)]
    for linear in hidden[:-1]:
        x = torch.clamp(F.linear(x, linear.weight, linear.bias), min=0.0)
    return F.linear(x, hidden[-1].weight, hidden[-1].bias)


def test_batch_norm_lesions_zero_the_map_after_batch_norm_and_relu():
    model, data = tiny_vgg(seed=7, batch_norm=True), tiny_images(seed=8)
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.features)
    sweep = lesion_sweep(model, data, batch_size=5, lesions_per_pass=4).set_index(KEYS)
    sizes = filters_per_layer(model)
    with torch.inference_mode():
        for task, (images, labels) in data.items():
            intact = plain_forward(model, images)
            torch.testing.assert_close(model(images), intact, rtol=1e-4, atol=1e-5)
            expected_intact = F.cross_entropy(intact, labels).item()
            assert sweep.xs(task, level="task")["intact_loss"].sub(expected_intact).abs().max() < 1e-5
            for layer in CONV_LAYERS:
                before_bn_differs = 0
                for f in range(sizes[layer]):
                    logits = plain_forward(model, images, layer, [f])
                    with lesioned(model, {layer: [f]}):
                        torch.testing.assert_close(model(images), logits, rtol=1e-4, atol=1e-5)
                    row = sweep.loc[(layer, f, task)]
                    assert row["loss"] == pytest.approx(F.cross_entropy(logits, labels).item(), abs=1e-5)
                    assert row["accuracy"] == (logits.argmax(1) == labels).sum().item() / len(labels)
                    wrong = plain_forward(model, images, layer, [f], before_batch_norm=True)
                    before_bn_differs += bool((wrong - logits).abs().max() > 1e-3)
                # teeth: zeroing the conv's output instead (before batch norm) would give other logits (where
                # relu(batch norm of 0) is not 0 already)
                assert before_bn_differs >= 1, layer


def test_memory_budget_plan_gives_the_same_results():
    model, data = tiny_vgg(seed=3), tiny_images(seed=4)
    fixed = lesion_sweep(model, data, layers=["conv2_1", "conv5_3"], batch_size=17, lesions_per_pass=64)
    tight = lesion_sweep(model, data, layers=["conv2_1", "conv5_3"], memory_budget=200_000)
    plans = tight.attrs["plans"]
    assert plans["conv2_1"]["lesions_per_pass"] < 8 and plans["conv2_1"]["images_per_pass"] < 17
    assert tight.attrs["memory_budget_bytes"] == 200_000
    assert abs(fixed.loss - tight.loss).max() < 1e-5
    assert (fixed.accuracy == tight.accuracy).all()


def test_lesioned_zeroes_exactly_the_given_maps_and_cleans_up():
    model = tiny_vgg()
    images = tiny_images()["a"][0]
    seen = {}
    next_conv = model.features[relu_indices(model)["conv3_2"] + 1]
    with torch.inference_mode():
        intact = model(images)
        with lesioned(model, {"conv3_2": [0, 5]}):
            handle = next_conv.register_forward_pre_hook(lambda m, i: seen.__setitem__("maps", i[0].clone()))
            lesioned_out = model(images)
            handle.remove()
        after = model(images)
    maps = seen["maps"]
    assert (maps[:, [0, 5]] == 0).all() and maps[:, 1].abs().sum() > 0
    assert not torch.equal(intact, lesioned_out)
    assert torch.equal(intact, after)
    with pytest.raises(ValueError, match="fc6"):
        with lesioned(model, {"fc6": [0]}):
            pass
    with pytest.raises(ValueError, match="8 filters"):
        with lesioned(model, {"conv2_1": [8]}):
            pass


def test_separate_heads_score_each_image_within_its_own_head():
    model, data = tiny_vgg(seed=9), tiny_images(seed=10)  # task a: outputs 0-2, task b: outputs 3-5
    heads, layers = OutputHeads((3, 3)), ["conv1_2", "conv4_1", "conv5_3"]
    fast = lesion_sweep(model, data, layers=layers, batch_size=6, lesions_per_pass=5, heads=heads)
    reference = reference_lesion_sweep(model, data, layers=layers, heads=heads)
    both = fast.merge(reference, on=KEYS, suffixes=("", "_ref"), validate="one_to_one")
    assert len(both) == len(fast) == len(reference)
    for column in ("loss", "intact_loss"):
        assert abs(both[column] - both[f"{column}_ref"]).max() < 1e-4, column
    for column in ("accuracy", "intact_accuracy"):
        assert (both[column] == both[f"{column}_ref"]).all(), column
    with torch.inference_mode():  # the intact loss by hand: cross-entropy over the task's three outputs
        for task, offset in (("a", 0), ("b", 3)):
            images, labels = data[task]
            logits = model(images)[:, offset : offset + 3]
            row = fast[fast.task == task].iloc[0]
            assert row["intact_loss"] == pytest.approx(F.cross_entropy(logits, labels - offset).item(), abs=1e-5)
            assert row["intact_accuracy"] == (logits.argmax(1) == labels - offset).sum().item() / len(labels)
    # teeth: one softmax over all six outputs gives other losses
    shared = lesion_sweep(model, data, layers=layers, batch_size=6, lesions_per_pass=5)
    assert (shared.loss - fast.loss).abs().min() > 1e-3
