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

import operator
import weakref
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn

from lightning_modules.vgg import VGG, conv_indices

ADDS = (operator.add, operator.iadd, torch.add)
RELUS = (F.relu, torch.relu)


@dataclass(frozen=True)
class Unit:
    """One lesion unit: its name, the traced graph's node that holds it, the module a lesion hook zeroes, and its
    number of channels (filters)."""

    name: str
    node: str
    hook: str
    channels: int


_TRACES: weakref.WeakKeyDictionary[nn.Module, tuple[fx.GraphModule, dict[str, Unit]]] = weakref.WeakKeyDictionary()


def traced(model: nn.Module) -> fx.GraphModule:
    """`model`'s forward as a torch.fx graph (sharing its modules), traced once per model."""
    return _trace(model)[0]


def lesion_units(model: nn.Module) -> dict[str, Unit]:
    """The model's lesion units by name, in forward order."""
    return _trace(model)[1]


def filters_per_unit(model: nn.Module) -> dict[str, int]:
    """Number of filters (channels) of each lesion unit, in forward order."""
    return {name: unit.channels for name, unit in lesion_units(model).items()}


def unit_names(arch: str) -> tuple[str, ...]:
    """The lesion units of the registry's `arch`, by name, in forward order (from a copy without data: names depend
    on neither width nor batch norm)."""
    from lightning_modules.architectures import build_network

    with torch.device("meta"):
        return tuple(lesion_units(build_network(arch, 2)))


def num_outputs(model: nn.Module) -> int:
    """Number of units of the output layer (the label space's classes): the last linear layer's outputs."""
    return [module for module in model.modules() if isinstance(module, nn.Linear)][-1].out_features


def unit_node(graph: fx.GraphModule, unit: Unit) -> fx.Node:
    """The node of `graph` (the model's `traced` graph) that holds `unit`."""
    return next(node for node in graph.graph.nodes if node.name == unit.node)


def _trace(model: nn.Module) -> tuple[fx.GraphModule, dict[str, Unit]]:
    if model not in _TRACES:
        graph = fx.symbolic_trace(model)
        _TRACES[model] = graph, _find_units(graph, _conv_names(model))
    return _TRACES[model]


def _conv_names(model: nn.Module) -> dict[str, str]:
    """Display names of conv modules by path: VGG's conv<block>_<n>; other architectures keep their paths."""
    if isinstance(model, VGG):
        return {f"features.{index}": name for name, index in conv_indices(model).items()}
    return {}


def _find_units(graph: fx.GraphModule, conv_names: dict[str, str]) -> dict[str, Unit]:
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
            name = conv_names.get(source.target, source.target)
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
