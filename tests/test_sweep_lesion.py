"""The lesion engine against its naive definition, at every conv layer, with and without batch norm."""

from __future__ import annotations

import pytest
import torch

from lightning_modules.layer_names import CONV_LAYERS
from lightning_modules.vgg import filters_per_layer, relu_indices
from sweeps.engine import RESULT_COLUMNS, lesion_sweep
from sweeps.lesions import lesioned
from sweeps.reference import reference_lesion_sweep
from helpers_sweeps import tiny_images, tiny_vgg


@pytest.mark.parametrize("batch_norm", [False, True], ids=["plain", "batchnorm"])
def test_fast_sweep_equals_naive_reference_at_every_layer(batch_norm):
    model, data = tiny_vgg(batch_norm=batch_norm), tiny_images()
    # Odd pass sizes so that batches and lesion groups have ragged ends.
    fast = lesion_sweep(model, data, batch_size=7, lesions_per_pass=3)
    reference = reference_lesion_sweep(model, data, batch_size=7)

    assert list(fast.columns) == list(RESULT_COLUMNS)
    sizes = filters_per_layer(model)
    assert len(fast) == 2 * sum(sizes.values())
    assert sorted(fast.layer_index.unique()) == list(range(1, 14))
    for layer in CONV_LAYERS:
        rows = fast[fast.layer == layer]
        ref = reference[reference.layer == layer]
        assert (rows["filter"].to_numpy() == ref["filter"].to_numpy()).all()
        assert abs(rows.loss.to_numpy() - ref.loss.to_numpy()).max() < 1e-4, layer
        assert (rows.accuracy.to_numpy() == ref.accuracy.to_numpy()).all(), layer
        # The comparison has teeth: lesions change the loss by far more than the tolerance.
        assert abs(rows.loss - rows.intact_loss).max() > 1e-2, layer


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
