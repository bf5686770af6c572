"""The model registry: every architecture is torchvision's at width 1, has its lesion units from the module graph,
and the sweep engine is exact against the naive definition on every unit of each."""

from __future__ import annotations

import pytest
import torch
import torchvision
from helpers_sweeps import centred, resolution, tiny_images, tiny_network
from torch import nn

from common.errors import UserError
from lightning_modules.architectures import ARCHITECTURES, VGGS, build_network
from lightning_modules.config import load_config
from lightning_modules.layer_names import CONV_LAYERS
from lightning_modules.units import filters_per_unit, lesion_units, representation_names, resolve_layers
from sweeps.engine import lesion_sweep
from sweeps.layer_split import split_at
from sweeps.lesions import lesioned
from sweeps.reference import reference_lesion_sweep

RESNET18_UNITS = ["conv1"] + [
    name
    for stage in range(1, 5)
    for block in range(2)
    for name in (f"layer{stage}.{block}.conv1", f"layer{stage}.{block}")
]


@pytest.mark.parametrize(
    "arch, batch_norm, reference",
    [
        *[(arch, False, arch) for arch in ARCHITECTURES],
        *[(arch, True, f"{arch}_bn") for arch in VGGS],
    ],
)
def test_every_architecture_is_torchvisions_at_full_width(arch, batch_norm, reference):
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        ours = build_network(arch, 2137, batch_norm=batch_norm)
        theirs = getattr(torchvision.models, reference)(weights=None, num_classes=2137)
    ours_shapes = {key: tuple(value.shape) for key, value in ours.state_dict().items()}
    assert ours_shapes == {key: tuple(value.shape) for key, value in theirs.state_dict().items()}
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())


def test_full_width_weights_give_torchvisions_outputs():
    theirs = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    ours = build_network("resnet18", 10).eval()
    ours.load_state_dict(theirs.state_dict())
    images = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        assert torch.equal(ours(images), theirs(images))


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_tiny_networks_run_at_their_smallest_test_resolution(arch):
    model = tiny_network(arch)
    with torch.inference_mode():
        assert model(torch.randn(2, 3, resolution(arch), resolution(arch))).shape == (2, 6)


def test_units_are_named_as_users_find_them_in_forward_order():
    assert list(lesion_units(tiny_network("vgg16"))) == list(CONV_LAYERS)
    assert list(lesion_units(tiny_network("vgg19")))[-4:] == ["conv5_1", "conv5_2", "conv5_3", "conv5_4"]
    assert list(lesion_units(tiny_network("vgg11")))[:3] == ["conv1_1", "conv2_1", "conv3_1"]
    assert list(lesion_units(tiny_network("alexnet"))) == [f"features.{i}" for i in (0, 3, 6, 8, 10)]
    resnet18 = tiny_network("resnet18")
    assert list(lesion_units(resnet18)) == RESNET18_UNITS
    resnet50 = lesion_units(tiny_network("resnet50"))
    assert len(resnet50) == 1 + 16 * 3 and list(resnet50)[1:4] == ["layer1.0.conv1", "layer1.0.conv2", "layer1.0"]
    for name in RESNET18_UNITS:  # a unit that is a module's output is named by the module's path
        resnet18.get_submodule(name)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_unit_channels_are_those_of_the_activation(arch):
    model = tiny_network(arch)
    seen: dict[str, int] = {}

    def record(name: str):
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            seen[name] = output.shape[1]

        return hook

    units = lesion_units(model)
    hooks = [model.get_submodule(unit.hook).register_forward_hook(record(name)) for name, unit in units.items()]
    with torch.inference_mode():
        model(torch.randn(1, 3, resolution(arch), resolution(arch)))
    for hook in hooks:
        hook.remove()
    assert seen == filters_per_unit(model)


def test_resnet_block_units_zero_the_block_output_not_each_relu_call():
    """torchvision's BasicBlock calls one ReLU module twice: lesioning the block's output must leave its first conv's
    unit alone, and a lesion of that conv's unit must leave the block's other maps alone but change its output."""
    model = tiny_network("resnet18")
    lesion_units(model)  # traced before the test's own hooks join the graph
    images = torch.randn(2, 3, 32, 32)
    block = model.get_submodule("layer1.0")
    captured = {}
    handle = block.conv2.register_forward_pre_hook(lambda m, args: captured.__setitem__("bn1", args[0].clone()))
    out_handle = model.get_submodule("layer1.1").register_forward_pre_hook(  # the block's output, as the next reads it
        lambda m, args: captured.__setitem__("out", args[0].clone())
    )
    with torch.inference_mode(), lesioned(model, {"layer1.0": [1]}):
        model(images)
    assert (captured["out"][:, 1] == 0).all() and (captured["bn1"][:, 1] != 0).any()
    with torch.inference_mode(), lesioned(model, {"layer1.0.conv1": [1]}):
        model(images)
    assert (captured["bn1"][:, 1] == 0).all() and (captured["out"][:, 1] != 0).any()
    handle.remove()
    out_handle.remove()


def test_the_shortcut_goes_where_the_units_only_consumer_is_one_linear_map():
    shortcut = {name: split_at(tiny_network("resnet18"), name).shortcut for name in RESNET18_UNITS}
    assert [name for name, used in shortcut.items() if used] == [
        *(name for name in RESNET18_UNITS if name.endswith("conv1") and name != "conv1"),
        "layer4.1",  # the last block's output: average pooling, then the output layer
    ]
    assert all(split_at(tiny_network("alexnet"), name).shortcut for name in lesion_units(tiny_network("alexnet")))


@pytest.mark.parametrize(
    "arch, batch_norm, sample",
    [
        ("resnet18", False, None),
        ("alexnet", False, None),
        ("vgg11", True, None),
        ("resnet50", False, 3),  # every unit, 3 of its filters in the reference (the engine sweeps them all)
    ],
)
def test_engine_equals_the_naive_definition_on_every_unit(arch, batch_norm, sample):
    size = resolution(arch)
    images = tiny_images(size=size)
    model = centred(tiny_network(arch, seed=3, batch_norm=batch_norm), torch.cat([x for x, _ in images.values()]))
    sizes = filters_per_unit(model)
    fast = lesion_sweep(model, images, batch_size=6, lesions_per_pass=5)
    filters = {unit: sorted({0, n // 2, n - 1})[:sample] for unit, n in sizes.items()} if sample else None
    naive = reference_lesion_sweep(model, images, batch_size=4, filters=filters)
    keys = ["layer", "filter", "task"]
    merged = naive.merge(fast, on=keys, suffixes=("_naive", ""), validate="one_to_one")
    assert len(merged) == len(naive) == (sum(len(f) for f in filters.values()) if filters else sum(sizes.values())) * 2
    assert (merged["layer_index"] == merged["layer_index_naive"]).all()
    for column in ("loss", "intact_loss"):
        torch.testing.assert_close(
            torch.tensor(merged[column].to_numpy()),
            torch.tensor(merged[f"{column}_naive"].to_numpy()),
            rtol=2e-5,
            atol=1e-6,
        )
    for column in ("accuracy", "intact_accuracy"):
        assert (merged[column] - merged[f"{column}_naive"]).abs().max() <= 1 / 7 + 1e-12  # at most one near-tie
    assert (merged["accuracy"] == merged["accuracy_naive"]).mean() > 0.99
    assert merged["loss"].std() > 0  # lesions matter: the comparison has teeth


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model.arch=vgg17"], "model.arch is 'vgg17'; valid values: vgg16, vgg11"),
        (["model.arch=alexnet", "model.batch_norm=true"], "alexnet has no batch-norm variant"),
        (["model.arch=alexnet", "model.batch_norm=false"], "data.resolution must be at least 63 for alexnet"),
    ],
)
def test_bad_architecture_settings_are_one_line(overrides, message):
    from helpers_train import ROOT

    with pytest.raises(UserError, match=message):
        load_config(ROOT / "configs" / "tiny_face_object.yaml", overrides)


def test_output_layer_is_the_last_linear_map():
    for arch in ARCHITECTURES:
        outputs = [m for m in tiny_network(arch).modules() if isinstance(m, nn.Linear)][-1].out_features
        assert outputs == 6


def test_the_architectures_studies_train_each_architecture():
    from helpers_train import ROOT

    from specialize.study_config import load_study

    for name in ("architectures", "architectures_paper"):
        study = load_study(ROOT / "studies" / f"{name}.yaml")
        for network, spec in study.networks.items():
            config = load_config(ROOT / spec.config, [*study.overrides, *spec.overrides])
            assert config.model.arch == network and not study.analyses.lesion.layers  # every unit of each


def test_a_study_naming_a_unit_one_of_its_networks_lacks_is_refused_when_loaded(tmp_path):
    from helpers_train import ROOT

    from specialize.study_config import load_study

    with pytest.raises(UserError, match=r"analyses.lesion.layers: network alexnet \(alexnet\) has no layer 'conv1_1'"):
        load_study(
            ROOT / "studies" / "architectures.yaml", [f"output={tmp_path}", "analyses.lesion.layers=[conv1_1,conv5_3]"]
        )
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    "arch, penultimate, last_unit",
    [("vgg16", "fc7", "conv5_3"), ("alexnet", "classifier.4", "features.10"), ("resnet18", "layer4.1", "layer4.1")],
)
def test_layer_keywords_name_each_architectures_own_layers(arch, penultimate, last_unit):
    assert resolve_layers(arch, ["penultimate"]) == (penultimate,) and resolve_layers(arch, ["last_unit"]) == (
        last_unit,
    )
    assert resolve_layers(arch, ["all"]) == representation_names(arch)
    assert resolve_layers(arch, ["output", "all"])[:2] == ("output", representation_names(arch)[0])  # each once
    assert resolve_layers(arch, ["no_such"]) == ("no_such",)  # left for the checks against the network


def test_the_default_representation_layers_hold_for_every_network_of_the_architectures_study(tmp_path):
    from helpers_train import ROOT

    from specialize.study_config import load_study

    on = ["analyses.decoding.enabled=true", "analyses.visualize.enabled=true", "analyses.rsa.enabled=true"]
    study = load_study(ROOT / "studies" / "architectures.yaml", [f"output={tmp_path}", *on, "data.behaviour={}"])
    analyses = study.analyses  # penultimate (VGG16's fc7), last_unit (its conv5_3), all: every network has them
    assert (analyses.decoding.extraction.layers, analyses.visualize.layer) == (("penultimate",), "last_unit")
    assert analyses.rsa.extraction.layers == ("all",)


def test_keywords_resolve_for_each_checkpoint_and_must_agree_across_those_analysed_together(tmp_path):
    from helpers_representation import save_checkpoint

    from analysis.representations.activations import Network, resolved_layers

    classes = {"face": ["a", "b", "c"], "object": ["d", "e", "f"]}  # tiny_network's 6 outputs
    networks = {
        arch: Network(
            arch, save_checkpoint(tiny_network(arch), classes, tmp_path / arch, tmp_path, 1 / 16, False, arch=arch)
        )
        for arch in ("vgg16", "resnet18")
    }
    assert resolved_layers(["penultimate"], [networks["vgg16"]]) == ("fc7",)
    assert resolved_layers(["penultimate", "last_unit"], [networks["resnet18"]]) == ("layer4.1",)
    assert resolved_layers(["output"], list(networks.values())) == ("output",)
    with pytest.raises(
        UserError, match=r"layers all are conv1_1, .* in network vgg16 \(vgg16\) but conv1, .* in resnet18"
    ):
        resolved_layers(["all"], list(networks.values()))
