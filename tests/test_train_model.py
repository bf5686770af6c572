"""The VGG16, the training config and the per-task loss and metrics, without data or Lightning runs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torchvision

from common.errors import UserError
from data_pipeline.label_space import LabelSpace
from lightning_modules.config import load_config, write_config
from lightning_modules.heads import OutputHeads
from lightning_modules.module import METRICS, TaskMetrics, own_output_mask, topk_hits
from lightning_modules.vgg import vgg16

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def layer_signature(module: torch.nn.Module) -> list[tuple]:
    """(type, parameter shapes) of every leaf module, in order."""
    return [
        (type(m).__name__, tuple(tuple(p.shape) for p in m.parameters(recurse=False)))
        for m in module.modules()
        if not list(m.children())
    ]


def test_vgg16_matches_torchvision_at_full_width():
    ours = vgg16(num_classes=2137)
    reference = torchvision.models.vgg16(weights=None, num_classes=2137)
    assert layer_signature(ours) == layer_signature(reference)
    count = sum(p.numel() for p in ours.parameters())
    assert count == sum(p.numel() for p in reference.parameters())
    assert count == 138_357_544 - 1000 * 4097 + 2137 * 4097  # torchvision's documented 1000-class count


@pytest.mark.parametrize("size", [32, 48])
def test_tiny_vgg16_runs_at_small_inputs(size):
    model = vgg16(num_classes=7, width=1 / 16).eval()
    assert model(torch.zeros(2, 3, size, size)).shape == (2, 7)


def three_task_label_space() -> LabelSpace:
    return LabelSpace.from_classes({"a": ["a0", "a1"], "b": ["b0", "b1", "b2"], "c": ["c0"]})


def test_separate_heads_loss_is_cross_entropy_over_the_task_slice():
    label_space = three_task_label_space()
    logits = torch.randn(4, label_space.total_classes)
    labels = torch.tensor([1, 3, 5, 2])
    shared = OutputHeads.of(label_space, "shared").loss(logits, labels)
    separate = OutputHeads.of(label_space, "separate").loss(logits, labels)
    assert torch.allclose(shared, torch.nn.functional.cross_entropy(logits, labels, reduction="none"))
    for i, task in enumerate(["a", "b", "c", "b"]):
        part = logits[i, label_space.output_slice(task)]
        expected = torch.logsumexp(part, 0) - logits[i, labels[i]]
        assert separate[i].item() == pytest.approx(expected.item(), rel=1e-5)
    assert separate[2].item() == pytest.approx(0.0, abs=1e-6)  # a one-class task has nothing to get wrong


def test_topk_and_own_output_metrics():
    label_space = three_task_label_space()
    logits = torch.tensor([[0.0, 1.0, 5.0, 0.0, 0.0, 0.0]])  # label 1 (task a): wrong overall, right within task a
    labels = torch.tensor([1])
    own = logits.masked_fill(~own_output_mask(label_space)[label_space.task_of(labels)], float("-inf"))
    assert topk_hits(logits, labels, 1).item() == 0.0
    assert topk_hits(own, labels, 1).item() == 1.0
    assert topk_hits(logits, labels, 5).item() == 1.0


def test_task_metrics_accumulate_per_task():
    metrics = TaskMetrics(3, torch.device("cpu"))
    values = torch.arange(3 * len(METRICS), dtype=torch.float32).reshape(3, len(METRICS))
    metrics.update(torch.tensor([0, 2, 0]), values)
    assert metrics.counts.tolist() == [2.0, 0.0, 1.0]
    assert metrics.sums[0].tolist() == (values[0] + values[2]).tolist()


def test_config_overrides_and_defaults(tmp_path):
    config = load_config(
        CONFIGS / "tiny_face_object.yaml", ["trainer.epochs=3", "model.heads=separate", "tasks=[face]"]
    )
    assert (config.trainer.epochs, config.model.heads, config.tasks) == (3, "separate", ["face"])
    assert (config.optim.momentum, config.optim.weight_decay, config.optim.plateau_patience) == (0.9, 1e-4, 5)
    paper = load_config(CONFIGS / "face_object.yaml")
    assert (paper.optim.lr, paper.data.batch_size, paper.data.resolution, paper.model.width) == (0.001, 128, 224, 1.0)
    assert paper.data.classes == {"face": 1714, "object": 423}
    write_config(config, tmp_path)
    assert load_config(tmp_path / "config.yaml") == config


def test_a_config_extends_its_bases_relative_to_itself_and_says_what_differs(tmp_path):
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "sizes.yaml").write_text("data: {resolution: 32, batch_size: 16}\ntrainer: {epochs: 3}\n")
    (tmp_path / "base" / "small.yaml").write_text(
        "extends: sizes.yaml\ndata: {batch_size: 8}\nmodel: {width: 0.0625}\n"  # relative to base/
    )
    (tmp_path / "run.yaml").write_text("extends: [base/small.yaml]\nname: run\ntasks: [face]\ndata: {dir: d}\n")
    config = load_config(tmp_path / "run.yaml", ["trainer.epochs=5"])
    assert (config.data.resolution, config.data.batch_size, config.data.dir) == (32, 8, "d")  # merged, later wins
    assert (config.model.width, config.trainer.epochs, config.name) == (0.0625, 5, "run")  # overrides last
    (tmp_path / "base" / "sizes.yaml").write_text("extends: small.yaml\n")
    with pytest.raises(UserError, match="extends small.yaml, which extends it again"):
        load_config(tmp_path / "run.yaml")
    (tmp_path / "run.yaml").write_text("extends: missing.yaml\n")
    with pytest.raises(UserError, match="missing.yaml does not exist"):
        load_config(tmp_path / "run.yaml")


def test_shipped_tiny_configs_differ_from_their_base_in_name_and_tasks_alone():
    base = load_config(CONFIGS / "tiny_face_object.yaml").to_dict()
    for path in CONFIGS.glob("tiny_*.yaml"):
        config = load_config(path).to_dict()
        assert {key for key in config if config[key] != base[key]} <= {"name", "tasks"}, path


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model.widht=1"], "unknown config key model.widht; valid keys here: arch, batch_norm, dropout, heads, width"),
        (["bogus=1"], "unknown config key bogus"),
        (["model.heads=three"], "model.heads"),
        (["trainer.epochs=many"], "trainer.epochs must be int"),
        (["data.batch_size=30", "trainer.devices=4"], "not divisible"),
        (["tasks=[]"], "tasks is empty"),
        (["epochs"], "not key=value"),
    ],
)
def test_bad_configs_raise_user_errors(overrides, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        load_config(CONFIGS / "tiny_face_object.yaml", overrides)


def test_every_shipped_config_loads():

    names = sorted(p.stem for p in CONFIGS.glob("*.yaml"))
    for stem in ("face", "object", "face_object", "food_object", "car_object"):
        assert stem in names and f"tiny_{stem}" in names
    for name in names:
        config = load_config(CONFIGS / f"{name}.yaml")
        assert math.isclose(config.model.width, 1 / 16) == name.startswith("tiny_")
