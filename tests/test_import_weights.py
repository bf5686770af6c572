"""`specialize import`: state dicts written here (torchvision's own model, and the registry's at a small width) become
checkpoints every analysis reads; an imported network sweeps exactly as the same weights trained here; bad input is
one line naming what does not fit."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torchvision
from helpers_sweeps import centred, tiny_images
from safetensors.torch import save_file

from common.errors import UserError
from data_pipeline.label_space import LabelSpace
from lightning_modules.checkpoint import load_model
from lightning_modules.config import config_from_dict
from lightning_modules.import_weights import import_weights
from lightning_modules.module import TaskModule
from sweeps.engine import class_lesion_sweep

CLASSES = {"a": ["cat", "dog", "owl"], "b": ["car", "cup", "hat"]}


def class_files(tmp_path) -> list[str]:
    specs = []
    for task, names in CLASSES.items():
        (tmp_path / f"{task}.txt").write_text("\n".join(names) + "\n")
        specs.append(f"{task}={tmp_path / f'{task}.txt'}")
    return specs


def trained_here(tmp_path, arch: str, resolution: int = 32, **model):
    """A checkpoint as `specialize train` writes it (TaskModule's state dict and hyper-parameters) of `arch` at width
    1/16, with output biases centred on the test images so that lesions change answers."""
    config = {
        "name": "here",
        "tasks": list(CLASSES),
        "data": {"resolution": resolution},
        "model": {"arch": arch, "width": 1 / 16, **model},
    }
    torch.manual_seed(0)
    module = TaskModule(config_from_dict(config).to_dict(), LabelSpace.from_classes(CLASSES).to_dict()).eval()
    centred(module.model, torch.cat([images for images, _ in tiny_images(size=resolution).values()]))
    path = tmp_path / "here.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path)
    return path, module.model


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_an_imported_state_dict_sweeps_as_the_same_weights_trained_here(tmp_path, suffix):
    checkpoint, model = trained_here(tmp_path, "resnet18")
    weights = tmp_path / f"weights{suffix}"
    state = {key: value.contiguous() for key, value in model.state_dict().items()}
    save_file(state, weights) if suffix == ".safetensors" else torch.save(state, weights)
    imported = import_weights(weights, "resnet18", class_files(tmp_path), tmp_path / "imported.ckpt", resolution=32)
    here, there = load_model(checkpoint), load_model(imported)
    assert there.label_space == here.label_space and there.config.model == here.config.model
    images = tiny_images()
    ours = class_lesion_sweep(here.model, images, batch_size=6, lesions_per_pass=4)
    theirs = class_lesion_sweep(there.model, images, batch_size=6, lesions_per_pass=4)
    assert (ours.loss == theirs.loss).all() and (ours.correct == theirs.correct).all()
    assert list(ours.layers) == list(theirs.layers) and len(set(ours.layers)) == 17 and ours.loss.std() > 0


def test_torchvisions_own_model_imports_with_its_width_read_from_the_weights(tmp_path):
    reference = torchvision.models.resnet18(weights=None, num_classes=6).eval()
    torch.save(reference.state_dict(), tmp_path / "resnet18.pth")
    out = import_weights(tmp_path / "resnet18.pth", "resnet18", class_files(tmp_path), tmp_path / "r.ckpt")
    loaded = load_model(out)
    assert loaded.config.model.width == 1.0 and loaded.config.data.resolution == 224
    images = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        assert torch.equal(loaded.model(images), reference(images))
    assert loaded.label_space.tasks == ("a", "b") and loaded.label_space.classes[1] == ("car", "cup", "hat")


def test_a_vggs_batch_norm_is_read_from_the_weights(tmp_path):
    for batch_norm in (True, False):
        _, model = trained_here(tmp_path, "vgg11", batch_norm=batch_norm)
        torch.save(model.state_dict(), tmp_path / "vgg.pth")
        out = import_weights(tmp_path / "vgg.pth", "vgg11", class_files(tmp_path), tmp_path / "vgg.ckpt")
        assert load_model(out).config.model.batch_norm == batch_norm


def test_a_lightning_or_ddp_checkpoint_is_unwrapped(tmp_path):
    _, model = trained_here(tmp_path, "alexnet", resolution=64)
    state = {f"module.{key}": value for key, value in model.state_dict().items()}
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "ddp.pt")
    out = import_weights(tmp_path / "ddp.pt", "alexnet", class_files(tmp_path), tmp_path / "a.ckpt", resolution=64)
    assert load_model(out).config.model.width == 1 / 16


def test_mismatches_are_one_line_naming_the_tensor(tmp_path):
    _, model = trained_here(tmp_path, "resnet18")
    torch.save(model.state_dict(), tmp_path / "w.pth")
    specs = class_files(tmp_path)
    with pytest.raises(UserError, match=r"with 3 outputs .*fc\.weight: found \(6, 32\), model \(3, 32\)"):
        import_weights(tmp_path / "w.pth", "resnet18", specs[:1], tmp_path / "x.ckpt", resolution=32)
    with pytest.raises(
        UserError, match=r"do not fit resnet50 .*layer1\.0\.conv1\.weight: found \(4, 4, 3, 3\), model \(4, 4, 1, 1\)"
    ):
        import_weights(tmp_path / "w.pth", "resnet50", specs, tmp_path / "x.ckpt", resolution=32)
    with pytest.raises(
        UserError,
        match=r"do not fit resnet18 at width 0\.125 .*\(conv1\.weight: found \(4, 3, 7, 7\), model \(8, 3, 7, 7\)",
    ):
        import_weights(tmp_path / "w.pth", "resnet18", specs, tmp_path / "x.ckpt", width=0.125, resolution=32)
    assert not (tmp_path / "x.ckpt").exists()


class Payload:  # pickled by reference: loading it would import this module and could run code
    pass


def test_pickled_objects_are_refused_and_the_cli_says_so_in_one_line(tmp_path):
    torch.save({"weights": Payload()}, tmp_path / "evil.pth")
    specs = class_files(tmp_path)
    with pytest.raises(UserError, match="refused to load"):
        import_weights(tmp_path / "evil.pth", "resnet18", specs, tmp_path / "x.ckpt")
    command = [sys.executable, "-m", "specialize", "import", "--weights", str(tmp_path / "evil.pth")]
    result = subprocess.run(
        [*command, "--arch", "resnet18", *(f"--classes={s}" for s in specs), "--out", str(tmp_path / "x.ckpt")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "refused to load" in result.stderr and result.stderr.count("\n") == 1
    result = subprocess.run(
        [*command, "--arch", "resnet17", "--out", str(tmp_path / "x.ckpt")], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2 and "--arch is 'resnet17'" in result.stderr
    assert not (tmp_path / "x.ckpt").exists()
