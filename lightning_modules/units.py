"""Lesion units: the named activations whose channels a lesion zeroes, found from the module graph (torch.fx).

A unit is the output of a ReLU that follows a conv (through its batch norm, if any), or that follows a residual sum:
- VGG and AlexNet: every conv after its ReLU;
- ResNet: the stem conv, every conv inside a block after its batch norm and ReLU, and each block's output after the
  residual sum and ReLU.
Units are in forward order and named as the tables, figures and report show them: VGG's convs `conv<block>_<n>`
(conv1_1 ... conv5_3 in VGG16); elsewhere the path of the module that computes them, so a user finds them in the model:
a conv's path for a conv unit (`features.3`, `layer3.1.conv1`), a block's path for its output (`layer3.1`).

torchvision's ResNet blocks call one ReLU module twice, so a hook on a module is not a unit: each unit is a node of the
traced graph, and `Unit.hook` names a module called once whose output a lesion may zero instead (the ReLU itself; the
batch norm or conv that feeds the ReLU alone, since ReLU(0) = 0; or the block whose output the unit is).
"""

from __future__ import annotations

import functools
import operator
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn

from lightning_modules.layer_names import ALL_LAYERS, LAST_UNIT, PENULTIMATE
from lightning_modules.vgg import VGG, conv_indices, fc_indices

ADDS = (operator.add, operator.iadd, torch.add)
RELUS = (F.relu, torch.relu)
OUTPUT = "output"  # the name of the logits among the representation layers


@dataclass(frozen=True)
class Unit:
    """One lesion unit: its name, the traced graph's node that holds it, the module a lesion hook zeroes, and its
    number of channels (filters)."""

    name: str
    node: str
    hook: str
    channels: int


_TRACES: weakref.WeakKeyDictionary[nn.Module, tuple[fx.GraphModule, dict[str, Unit], dict[str, str]]] = (
    weakref.WeakKeyDictionary()
)


def traced(model: nn.Module) -> fx.GraphModule:
    """`model`'s forward as a torch.fx graph (sharing its modules), traced once per model."""
    return _trace(model)[0]


def lesion_units(model: nn.Module) -> dict[str, Unit]:
    """The model's lesion units by name, in forward order."""
    return _trace(model)[1]


def representation_layers(model: nn.Module) -> dict[str, str]:
    """The named activations the representation analyses read, in forward order, each with the name of its node in
    the traced graph: every lesion unit, each hidden linear layer after its ReLU (VGG's fc6 and fc7; elsewhere named
    by the linear's path, e.g. AlexNet's `classifier.1`), and the logits (`output`)."""
    return _trace(model)[2]


def representation_names(arch: str) -> tuple[str, ...]:
    """The representation layers of the registry's `arch`, by name, in forward order (VGG16: conv1_1 ... conv5_3,
    fc6, fc7, output; ResNet-18: conv1, layer1.0.conv1, layer1.0, ..., layer4.1, output)."""
    return _names_of(arch)[1]


def filters_per_unit(model: nn.Module) -> dict[str, int]:
    """Number of filters (channels) of each lesion unit, in forward order."""
    return {name: unit.channels for name, unit in lesion_units(model).items()}


def unit_names(arch: str) -> tuple[str, ...]:
    """The lesion units of the registry's `arch`, by name, in forward order."""
    return _names_of(arch)[0]


def resolve_layers(arch: str, layers: Sequence[str]) -> tuple[str, ...]:
    """`layers` of a network of the registry's `arch`, each keyword (`layer_names.LAYER_KEYWORDS`: all,
    penultimate, last_unit) replaced by the names it stands for, in the order given and each once; other names are
    kept as they are (`with_layers` and the settings check them)."""
    representations, units = representation_names(arch), unit_names(arch)
    stands_for = {ALL_LAYERS: representations, PENULTIMATE: representations[-2:-1], LAST_UNIT: units[-1:]}
    return tuple(dict.fromkeys(name for layer in layers for name in stands_for.get(layer, (layer,))))


@functools.cache
def _names_of(arch: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The lesion units and representation layers of `arch` by name, from a copy without data (names depend on
    neither width nor batch norm)."""
    from lightning_modules.architectures import build_network

    with torch.device("meta"):
        model = build_network(arch, 2)
        return tuple(lesion_units(model)), tuple(representation_layers(model))


def num_outputs(model: nn.Module) -> int:
    """Number of units of the output layer (the label space's classes): the last linear layer's outputs."""
    return [module for module in model.modules() if isinstance(module, nn.Linear)][-1].out_features


def unit_node(graph: fx.GraphModule, unit: Unit) -> fx.Node:
    """The node of `graph` (the model's `traced` graph) that holds `unit`."""
    return next(node for node in graph.graph.nodes if node.name == unit.node)


def walk(model: nn.Module, images: torch.Tensor) -> Iterator[tuple[fx.Node, fx.Interpreter]]:
    """The model's traced graph run on `images` node by node: yields each node, its value in the interpreter's `env`,
    and last the output node (the logits: `env[node.args[0]]`). A value is dropped once its last reader has run, so
    memory is what the forward pass itself holds; `node_value` computes a later node ahead of the walk."""
    graph = traced(model)
    nodes = list(graph.graph.nodes)
    last_read = {arg: position for position, node in enumerate(nodes) for arg in node.all_input_nodes}
    interpreter = fx.Interpreter(graph, garbage_collect_values=False)
    for position, node in enumerate(nodes):
        if node.op != "output":
            interpreter.env[node] = images if node.op == "placeholder" else node_value(interpreter, node)
            for arg in node.all_input_nodes:
                if last_read[arg] == position:
                    interpreter.env.pop(arg)
        yield node, interpreter


def node_value(interpreter: fx.Interpreter, node: fx.Node) -> torch.Tensor:
    """The value of `node` in a `walk`: kept, or computed now with whatever it reads that is not yet (a value that a
    unit does not change may come later in the graph than the unit, e.g. a ResNet block's downsampled input)."""
    if node not in interpreter.env:
        for arg in node.all_input_nodes:
            node_value(interpreter, arg)
        interpreter.env[node] = interpreter.run_node(node)
    return interpreter.env[node]


def _trace(model: nn.Module) -> tuple[fx.GraphModule, dict[str, Unit], dict[str, str]]:
    if model not in _TRACES:
        graph = fx.symbolic_trace(model)
        names = _display_names(model)
        units = _find_units(graph, names)
        _TRACES[model] = graph, units, _find_representations(graph, units, names)
    return _TRACES[model]


def _display_names(model: nn.Module) -> dict[str, str]:
    """Display names of conv and linear modules by path: VGG's conv<block>_<n>, fc6 and fc7; other architectures
    keep their paths."""
    if isinstance(model, VGG):
        convs = {f"features.{index}": name for name, index in conv_indices(model).items()}
        return convs | {f"classifier.{index}": name for name, index in fc_indices(model).items()}
    return {}


def _find_representations(graph: fx.GraphModule, units: dict[str, Unit], names: dict[str, str]) -> dict[str, str]:
    modules = dict(graph.named_modules())
    by_node = {unit.node: name for name, unit in units.items()}
    layers: dict[str, str] = {}
    for node in graph.graph.nodes:
        if node.name in by_node:
            layers[by_node[node.name]] = node.name
        elif _is_relu(node, modules) and _is_module(node.args[0], modules, nn.Linear):
            layers[names.get(node.args[0].target, node.args[0].target)] = node.name
        elif node.op == "output":
            layers[OUTPUT] = node.args[0].name
    return layers


def _find_units(graph: fx.GraphModule, display_names: dict[str, str]) -> dict[str, Unit]:
    modules = dict(graph.named_modules())
    calls: dict[str, int] = {}
    for node in graph.graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    units: dict[str, Unit] = {}
    for node in graph.graph.nodes:
        if not _is_relu(node, modules):
            continue
        source = _skip_batch_norm(node.args[0], modules)
        if _is_module(source, modules, nn.Conv2d):
            name = display_names.get(source.target, source.target)
        elif source.op == "call_function" and source.target in ADDS:
            name = _enclosing_module(node, graph)
        else:  # a ReLU after a linear layer: not a lesion unit
            continue
        units[name] = Unit(name, node.name, _hook(node, graph, modules, calls, name), _channels(source, modules))
    return units


def _is_module(node: fx.Node, modules: dict[str, nn.Module], kind: type | tuple[type, ...]) -> bool:
    return isinstance(node, fx.Node) and node.op == "call_module" and isinstance(modules[node.target], kind)


def _is_relu(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    return _is_module(node, modules, nn.ReLU) or (node.op == "call_function" and node.target in RELUS)


def _skip_batch_norm(node: fx.Node, modules: dict[str, nn.Module]) -> fx.Node:
    while _is_module(node, modules, nn.BatchNorm2d):
        node = node.args[0]
    return node


def _channels(node: fx.Node, modules: dict[str, nn.Module]) -> int:
    """Output channels of a conv, a batch norm, or of what a sum or pooling of them keeps."""
    if _is_module(node, modules, nn.Conv2d):
        return modules[node.target].out_channels
    if _is_module(node, modules, nn.BatchNorm2d):
        return modules[node.target].num_features
    return _channels(next(arg for arg in node.args if isinstance(arg, fx.Node)), modules)


def _scope(node: fx.Node) -> list[str]:
    """The paths of the modules whose forward computed `node`, outermost first (`path@n`: its n-th call)."""
    return [key.split("@")[0] for key in node.meta.get("nn_module_stack", {})]


def _enclosing_module(node: fx.Node, graph: fx.GraphModule) -> str:
    """The path of the innermost module (other than the node's own) whose forward returns `node`."""
    own = node.target if node.op == "call_module" else None
    for path in reversed(_scope(node)):
        if path == own:
            continue
        last = [other for other in graph.graph.nodes if path in _scope(other)][-1]
        if last is node:
            return path
        break
    raise ValueError(f"the unit at {node.name} is no module's output; cannot name it")


def _hook(node: fx.Node, graph: fx.GraphModule, modules: dict[str, nn.Module], calls: dict[str, int], name: str) -> str:
    """A module called once whose output, zeroed per channel, zeroes the unit's channels alike."""
    if node.op == "call_module" and calls[node.target] == 1:
        return node.target
    source = node.args[0]
    if source.op == "call_module" and calls[source.target] == 1 and len(source.users) == 1:
        return source.target  # ReLU(0) = 0: zeroing its only input zeroes its output
    if name in modules and calls.get(name, 0) == 0:
        return name  # a block: its forward returns the unit
    raise ValueError(f"no module computes unit {name} alone; cannot lesion it with a hook")
