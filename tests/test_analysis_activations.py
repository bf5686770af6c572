"""Layer activations: which tensor each layer name means, early stopping, and the streamed NPY files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers_representation import MemoryImages
from helpers_sweeps import tiny_vgg

from analysis.representations.activations import (
    Activations,
    check_unique,
    forward_layers,
    parse_network,
    pooled,
    write_activations,
)
from analysis.representations.settings import ActivationSettings
from common.errors import UserError
from lightning_modules.layer_names import LAYER_NAMES
from lightning_modules.units import traced
from lightning_modules.vgg import fc_indices, relu_indices


@pytest.fixture(scope="module")
def model():
    return tiny_vgg(seed=3, batch_norm=True)


def test_layers_are_conv_and_fc_after_relu_and_output_is_the_logits(model):
    images = torch.randn(3, 3, 32, 32)
    with torch.inference_mode():
        outputs = forward_layers(model, images, LAYER_NAMES)
        relus = relu_indices(model)
        for name in ("conv1_1", "conv3_2", "conv5_3"):  # after batch norm and ReLU
            assert torch.equal(outputs[name], model.features[: relus[name] + 1](images))
            assert outputs[name].min() >= 0
        flat = torch.flatten(model.avgpool(model.features(images)), 1)
        fc = fc_indices(model)
        fc6 = torch.relu(model.classifier[fc["fc6"]](flat))
        assert torch.equal(outputs["fc6"], fc6)
        assert torch.equal(outputs["fc7"], torch.relu(model.classifier[fc["fc7"]](fc6)))
        assert torch.equal(outputs["output"], model(images))
        assert outputs["output"].min() < 0  # logits, no ReLU


def test_forward_stops_after_the_deepest_layer_asked_for(model):
    traced(model)  # tracing calls every module on symbolic inputs (hooks fire), once per model: not what is tested
    called = []
    handle = model.classifier.register_forward_pre_hook(lambda *_: called.append("classifier"))
    later = model.features[relu_indices(model)["conv3_1"]].register_forward_hook(lambda *_: called.append("conv3_1"))
    try:
        with torch.inference_mode():
            forward_layers(model, torch.randn(2, 3, 32, 32), ["conv2_2", "conv1_1"])
    finally:
        handle.remove()
        later.remove()
    assert called == []


def test_pooling_averages_conv_maps_over_space_and_leaves_fc_vectors():
    maps = torch.arange(24.0).reshape(1, 2, 3, 4)
    assert torch.equal(pooled(maps, "mean"), maps.mean(dim=(2, 3)))
    assert pooled(maps, "full") is maps
    vector = torch.randn(2, 5)
    assert pooled(vector, "mean") is vector


@pytest.mark.parametrize("pooling, dtype", [("mean", "float32"), ("full", "float16")])
def test_streamed_npy_files_hold_every_image_in_order_one_batch_at_a_time(model, tmp_path, pooling, dtype):
    images, labels = torch.randn(10, 3, 32, 32), torch.arange(10) % 4
    source = MemoryImages(images, labels)
    settings = ActivationSettings(layers=("conv2_1", "fc7", "output"), pooling=pooling, dtype=dtype, batch_size=3)
    table = write_activations(model, source, 32, tmp_path, settings)
    assert source.served == [3, 3, 3, 1]
    assert table["image"].tolist() == list(range(10)) and table["label"].tolist() == labels.tolist()
    assert table["name"].tolist() == [f"class_{label}" for label in labels.tolist()]
    stored = Activations(tmp_path)
    with torch.inference_mode():
        expected = forward_layers(model, images, settings.layers)
    for layer in settings.layers:
        values = stored.layer(layer)
        reference = pooled(expected[layer], pooling).numpy()
        assert values.dtype == np.dtype(dtype) and values.shape == reference.shape
        tolerance = 1e-5 if dtype == "float32" else 1e-2
        np.testing.assert_allclose(values.astype(np.float32), reference, rtol=tolerance, atol=tolerance)
    assert stored.layer("conv2_1").ndim == (2 if pooling == "mean" else 4)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["conv2_1.npy", "fc7.npy", "output.npy"]


def test_an_interrupted_extraction_leaves_no_file_behind(model, tmp_path):
    class Failing(MemoryImages):
        def batches(self, resolution, batch_size):
            yield from list(super().batches(resolution, batch_size))[:1]
            raise RuntimeError("killed")

    (tmp_path / ".fc7.npy.old.tmp").write_bytes(b"left by a killed task")
    with pytest.raises(RuntimeError, match="killed"):
        write_activations(
            model,
            Failing(torch.randn(6, 3, 32, 32), torch.zeros(6, dtype=torch.long)),
            32,
            tmp_path,
            ActivationSettings(layers=("fc7",), batch_size=4),
        )
    assert list(tmp_path.iterdir()) == []


def test_fewer_images_than_announced_is_an_error_not_a_short_file(model, tmp_path):
    class Short(MemoryImages):
        def count(self):
            return super().count() + 1

    with pytest.raises(ValueError, match="wrote 4 rows of 5"):
        write_activations(
            model,
            Short(torch.randn(4, 3, 32, 32), torch.zeros(4, dtype=torch.long)),
            32,
            tmp_path,
            ActivationSettings(layers=("fc6",)),
        )
    assert list(tmp_path.iterdir()) == []


def test_settings_and_network_names_are_checked():
    with pytest.raises(UserError, match="unknown layer 'fc8'"):
        ActivationSettings(layers=("fc7", "fc8"))
    with pytest.raises(UserError, match="pooling is 'max'; valid values: mean, full"):
        ActivationSettings(pooling="max")
    assert parse_network("runs/train/tiny_face/checkpoints/last.ckpt").name == "tiny_face"
    assert parse_network("face=x/y.ckpt").name == "face"
    assert parse_network("other/model.ckpt").name == "model"
    with pytest.raises(UserError, match="both named 'a'"):
        check_unique([parse_network("a=1.ckpt"), parse_network("b=2.ckpt"), parse_network("a=3.ckpt")])
