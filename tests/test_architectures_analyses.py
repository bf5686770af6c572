"""Every analysis on a network other than VGG16, end to end on one tiny ResNet-18 (width 1/16, 32 px, fixed random
weights) and the held-out data: the lesion sweep and segregation at convs inside blocks and at block outputs (read by
the next block and its skip path), activations, decoding, RSA and feature visualisation, each reading the network's
own layers by name, numbering and drawing them in forward order."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers_representation import save_checkpoint, session_heldout_data, stimulus_list
from helpers_sweeps import centred, randomised

from analysis.representations.activations import Activations, forward_layers
from analysis.representations.visualize import preactivation
from analysis.segregation.run import run_segregation
from analysis.segregation.settings import SegregationSettings
from data_pipeline.data_dir import DataDir
from data_pipeline.sample import sample_images
from lightning_modules.architectures import build_network
from lightning_modules.checkpoint import load_model
from lightning_modules.units import representation_names, unit_names
from specialize.cli import main
from sweeps.distributed import run_sweep
from sweeps.lesions import lesioned
from sweeps.settings import SweepSettings

pytestmark = pytest.mark.slow
WIDTH = 1 / 16
SWEPT = ("layer3.1.conv1", "layer4.0", "layer4.1")  # a conv inside a block (the shortcut), two block outputs
LAYERS = representation_names("resnet18")


@pytest.fixture(scope="module")
def resnet(tmp_path_factory) -> tuple[Path, Path]:
    """The held-out data (face and object, 4 classes each) and a dual-task ResNet-18 on it: fixed random weights,
    output biases centred so that answers depend on the image."""
    data = session_heldout_data(tmp_path_factory)
    classes = {task: DataDir(data).classes(task) for task in ("face", "object")}
    torch.manual_seed(5)
    model = randomised(build_network("resnet18", sum(map(len, classes.values())), width=WIDTH))
    centred(model, torch.randn(32, 3, 32, 32))
    path = tmp_path_factory.mktemp("resnet") / "resnet18.ckpt"
    return data, save_checkpoint(model, classes, path, data, WIDTH, batch_norm=True, arch="resnet18")


def test_sweep_and_segregation_lesion_block_outputs_as_the_definition(resnet, ray_cluster, tmp_path):
    data, checkpoint = resnet
    settings = SweepSettings(images_per_task=8, layers=SWEPT)
    run_sweep(checkpoint, data, tmp_path / "sweep", settings, progress=False)
    summary = run_segregation(tmp_path / "sweep", tmp_path / "seg", data, SegregationSettings(n_bootstraps=20))
    assert summary["layers"] == list(SWEPT)
    table = pd.read_parquet(tmp_path / "seg" / "segregation.parquet")
    units = unit_names("resnet18")
    assert (table["layer_index"] == [units.index(layer) + 1 for layer in table["layer"]]).all()
    assert list(dict.fromkeys(table.sort_values("layer_index")["layer"])) == list(SWEPT)
    assert (tmp_path / "seg" / "figures" / "segregation_by_layer.png").stat().st_size > 0

    loaded = load_model(checkpoint)
    predictions = pd.read_parquet(tmp_path / "seg" / "predictions.parquet")
    ranking = pd.read_parquet(tmp_path / "sweep" / "ranking.parquet")
    changed = 0
    for layer in ("layer3.1.conv1", "layer4.0"):  # the engine's answers are the hooked network's
        top = ranking[(ranking.layer == layer) & (ranking.task == "face")].sort_values("rank")["filter"].tolist()
        lesion = top[: int(np.floor(0.2 * len(top) + 0.5))]
        for task in loaded.label_space.tasks:
            images, labels = sample_images(data, task, "test", None, 0, 32, label_space=loaded.label_space)
            with torch.inference_mode(), lesioned(loaded.model, {layer: lesion}):
                answers = loaded.model(images).argmax(1).numpy()
            rows = predictions[
                (predictions.layer == layer) & (predictions.lesioned_task == "face") & (predictions.eval_task == task)
            ].sort_values("image")
            assert (rows["prediction"].to_numpy() == answers).all() and (
                rows["label"].to_numpy() == labels.numpy()
            ).all()
            intact = predictions[(predictions.layer == "intact") & (predictions.eval_task == task)].sort_values("image")
            changed += int((intact["prediction"].to_numpy() != answers).sum())
    assert changed > 0  # the lesions change answers: the comparison has teeth


def test_activations_are_the_named_modules_outputs(resnet):
    _, checkpoint = resnet
    model = load_model(checkpoint).model
    images = torch.randn(5, 3, 32, 32)
    with torch.inference_mode():  # traced before the hooks below are set (a hook on a block would be traced in)
        found = forward_layers(model, images, ["layer3.1", "layer4.1", "output"], "mean")
        full = forward_layers(model, images, ["layer4.0"])["layer4.0"]
    seen = {}
    hooks = [
        model.layer3[1].register_forward_hook(lambda m, i, o: seen.update(block=o.clone())),
        model.fc.register_forward_hook(lambda m, i, o: seen.update(pooled=i[0].clone(), logits=o.clone())),
        model.layer4[0].bn2.register_forward_hook(lambda m, i, o: seen.update(bn2=o.clone())),
    ]
    with torch.inference_mode():
        model(images)
    for hook in hooks:
        hook.remove()
    torch.testing.assert_close(found["layer3.1"], seen["block"].mean(dim=(2, 3)))
    torch.testing.assert_close(found["layer4.1"], seen["pooled"])  # the block's output averaged: the fc's input
    torch.testing.assert_close(found["output"], seen["logits"])
    with torch.inference_mode():  # a block output's pre-activation is the residual sum: the ReLU of it is the unit
        block_sum = preactivation(model, images, "layer4.0")
    torch.testing.assert_close(torch.relu(block_sum), full)
    assert not torch.equal(block_sum, seen["bn2"])  # the skip path is in the sum


def test_decode_rsa_and_visualize_read_the_networks_layers(resnet, ray_cluster, tmp_path, capsys):
    data, checkpoint = resnet
    network = ["--checkpoint", f"resnet={checkpoint}", "--no-progress"]
    decode = tmp_path / "decode"
    layers = ["layer3.1", "layer4.1", "output"]
    assert (
        main(["decode", *network, "--data", str(data), "--layers", *layers, "--folds", "3", "--out", str(decode)]) == 0
    )
    table = pd.read_parquet(decode / "decoding.parquet")
    assert len(table) == 2 * 3 and (table["layer_index"] == [LAYERS.index(name) for name in table["layer"]]).all()
    assert json.loads((decode / "summary.json").read_text())["headline_layer"] == "output"  # the deepest
    assert (decode / "figures" / "decoding_by_layer.png").stat().st_size > 0

    behaviour = tmp_path / "behaviour"
    stimuli = str(stimulus_list(data, tmp_path / "list.txt"))
    assert main(["data", "behaviour", "--stimuli", stimuli, "--out", str(behaviour), "--participants", "4"]) == 0
    rsa = tmp_path / "rsa"
    args = ["--stimuli", str(behaviour / "stimuli.txt"), "--behaviour", str(behaviour), "--out", str(rsa)]
    assert main(["rsa", *network, *args]) == 0  # RSA's default: every layer of the network's own (`all`)
    summary = pd.read_parquet(rsa / "rsa.parquet")
    assert summary.sort_values("layer_index")["layer"].tolist() == list(LAYERS)
    assert (rsa / "figures" / "rsa_by_layer.png").stat().st_size > 0

    vis = tmp_path / "vis"
    base = ["visualize", *network, "--layer", "layer4.0", "--steps", "5", "--natural-images", "1"]
    assert main([*base, "--filters", "0,3", "--out", str(vis)]) == 0
    chosen = pd.read_parquet(vis / "layer4.0_chosen.parquet")
    stored = np.concatenate(
        [Activations(vis / "activations" / "resnet" / f"{task}_test").layer("layer4.0") for task in ("face", "object")]
    )
    np.testing.assert_allclose(chosen["natural_max_activation"], stored[:, [0, 3]].max(0), rtol=1e-6)
    assert np.load(vis / "layer4.0_chosen_images.npy").shape == (2, 3, 32, 32)
    capsys.readouterr()
    assert main(["visualize", *network, "--layer", "fc7", "--filters", "0", "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip()
    assert "network resnet (resnet18) has no layer 'fc7'; its layers are conv1, layer1.0.conv1" in err
    assert len(err.splitlines()) == 1
