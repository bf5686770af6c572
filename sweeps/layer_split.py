"""A network cut around one lesion unit (`lightning_modules.units`), found from its traced module graph, so that a
lesion of the unit reuses everything before it and, where it can, costs only the next linear map per filter.

- The prefix computes, once per batch of images, the unit and every other value the rest of the network reads that
  does not depend on the unit (the context: e.g. a ResNet block's input, which its skip path adds back).
- Shortcut: when the unit's only consumer is one conv or linear map (through per-channel pooling, and a flatten
  before a linear map), that map is linear in its input: its pre-activation with channel k zeroed is the intact
  pre-activation minus the contribution of channel k alone (of a set of channels, for a lesion of several filters).
  Pooling between the unit and that map acts per channel and keeps a zeroed channel at zero, so it runs once,
  unlesioned. VGG, AlexNet and the convs inside ResNet blocks (and the last block, before the output layer).
- Plain suffix pass otherwise (a ResNet block's output feeds both the next block and its skip path): the rest of the
  network runs on the lesioned unit.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn

from lightning_modules.units import lesion_units, traced, unit_node

# Pooling and similar per-channel maps allowed between a lesioned unit and the next linear map: each maps
# an all-zero channel to an all-zero channel and mixes no channels.
CHANNELWISE_MODULES = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Identity, nn.Dropout)
FLATTENS = (torch.flatten,)
_SPLITS: weakref.WeakKeyDictionary[nn.Module, dict[str, LayerSplit]] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class LayerSplit:
    """A network cut around one unit: prefix -> unit (+ context) -> [per-channel maps -> next linear map] -> suffix."""

    prefix: fx.GraphModule  # images -> (the unit's output maps, *context)
    channelwise: fx.GraphModule  # the unit's maps -> the next linear map's input (the identity without a shortcut)
    linear: nn.Conv2d | nn.Linear | None  # the unit's only consumer, if one conv or linear map; None: no shortcut
    suffix: (
        fx.GraphModule
    )  # (the next linear map's pre-activation, or the lesioned unit without one, *context) -> logits
    flattens: bool  # whether the next linear map takes the flattened maps
    after_flatten: nn.Sequential  # dropout between the flatten and a linear map (the identity in eval mode)

    @property
    def shortcut(self) -> bool:
        """Whether lesions may go through the next linear map's shortcut."""
        return self.linear is not None

    def lesion_input(self, activations: torch.Tensor) -> torch.Tensor:
        """The per-channel maps applied to the unit's output: the input of the next linear map, unflattened."""
        return self.channelwise(activations)

    def pre_activation(self, linear_input: torch.Tensor) -> torch.Tensor:
        """The next linear map's output (with bias) on the intact input."""
        return self.linear(self.after_flatten(torch.flatten(linear_input, 1)) if self.flattens else linear_input)

    def channel_contributions(self, linear_input: torch.Tensor, channel_sets: torch.Tensor) -> torch.Tensor:
        """What each set of channels (a row of `channel_sets`, (K, m)) alone adds to the next pre-activation:
        (B, K, *pre-activation shape). One channel per set is the sweep's single-filter lesion."""
        sets, size = channel_sets.shape
        channels = channel_sets.reshape(-1)
        selected = linear_input.index_select(1, channels)
        if self.flattens:
            weight = self.linear.weight.view(self.linear.out_features, linear_input.shape[1], -1)
            per_set = weight.index_select(1, channels).view(self.linear.out_features, sets, -1)
            return torch.einsum("bks,hks->bkh", selected.reshape(len(selected), sets, -1), per_set)
        conv = self.linear
        weight = conv.weight.index_select(1, channels).view(conv.out_channels, sets, size, *conv.kernel_size)
        weight = weight.transpose(0, 1).reshape(-1, size, *conv.kernel_size)
        out = F.conv2d(selected, weight, None, conv.stride, conv.padding, conv.dilation, groups=sets)
        return out.view(out.shape[0], sets, conv.out_channels, *out.shape[2:])

    def suffix_modules(self) -> list[nn.Module]:
        """The modules the suffix calls, in order (shared with the model)."""
        return [self.suffix.get_submodule(node.target) for node in self.suffix.graph.nodes if node.op == "call_module"]


@dataclass(frozen=True)
class Cut:
    """The nodes of a model's traced graph around one unit: what `split_at` builds its modules from and the memory
    plan sizes (`sweeps.memory_plan`)."""

    unit: fx.Node
    chain: list[fx.Node]  # per-channel maps between the unit and the next linear map
    linear: fx.Node | None  # the next linear map, if the unit's only consumer (the shortcut)
    flatten: fx.Node | None  # a flatten before a linear map
    after_flatten: list[fx.Node]  # dropout between that flatten and the linear map
    suffix: list[fx.Node]  # what runs per lesion after the linear map (or after the unit without one)
    context: list[fx.Node]  # values the suffix reads that the unit does not change
    prefix: list[fx.Node]  # everything the unit does not change

    @property
    def start(self) -> fx.Node:
        """The node whose (lesioned) value the suffix starts from."""
        return self.linear if self.linear is not None else self.unit


def cut_at(model: nn.Module, layer: str) -> tuple[fx.GraphModule, Cut]:
    """The model's traced graph and its cut around the unit `layer`."""
    units = lesion_units(model)
    if layer not in units:
        raise ValueError(f"cannot cut at {layer!r}: the network's units are {', '.join(units)}")
    graph = traced(model)
    unit = unit_node(graph, units[layer])
    order = {node: index for index, node in enumerate(graph.graph.nodes)}
    affected = _descendants(unit)
    chain, linear, flatten, after_flatten = _shortcut_chain(unit, dict(graph.named_modules()))
    done = {unit, *chain, *after_flatten} | ({linear, flatten} - {None})
    suffix = sorted((affected - done) - {_output(graph)}, key=order.get)
    context = sorted(
        {arg for node in suffix for arg in node.all_input_nodes if arg not in affected and arg is not unit},
        key=order.get,
    )
    prefix = [node for node in graph.graph.nodes if node.op != "output" and node not in affected]
    return graph, Cut(unit, chain, linear, flatten, after_flatten, suffix, context, prefix)


def split_at(model: nn.Module, layer: str) -> LayerSplit:
    """Cut `model` around its unit `layer` (see LayerSplit); modules are shared, not copied. Built once per model and
    unit."""
    splits = _SPLITS.setdefault(model, {})
    if layer not in splits:
        splits[layer] = _split(model, layer)
    return splits[layer]


def _split(model: nn.Module, layer: str) -> LayerSplit:
    graph, cut = cut_at(model, layer)
    prefix = _subgraph(graph, cut.prefix, [], [cut.unit, *cut.context], as_tuple=True)
    channelwise = _subgraph(graph, cut.chain, [cut.unit], [cut.chain[-1] if cut.chain else cut.unit])
    suffix = _subgraph(graph, cut.suffix, [cut.start, *cut.context], [_output(graph).args[0]])
    module = graph.get_submodule(cut.linear.target) if cut.linear is not None else None
    after_flatten = nn.Sequential(*(graph.get_submodule(node.target) for node in cut.after_flatten))
    return LayerSplit(prefix, channelwise, module, suffix, cut.flatten is not None, after_flatten)


def _output(graph: fx.GraphModule) -> fx.Node:
    return next(node for node in graph.graph.nodes if node.op == "output")


def _descendants(node: fx.Node) -> set[fx.Node]:
    """Every node that reads `node`, directly or not (not `node` itself)."""
    found: set[fx.Node] = set()
    stack = list(node.users)
    while stack:
        current = stack.pop()
        if current not in found:
            found.add(current)
            stack.extend(current.users)
    return found


def _shortcut_chain(
    unit: fx.Node, modules: dict[str, nn.Module]
) -> tuple[list[fx.Node], fx.Node | None, fx.Node | None, list[fx.Node]]:
    """(per-channel nodes, the next linear map's node, a flatten before it, dropout after that flatten) when the
    unit's only consumer is one full conv or linear map through per-channel maps; ([], None, None, []) otherwise.
    Dropout after the flatten (AlexNet's) is the identity in eval mode, where the engine runs."""
    chain: list[fx.Node] = []
    after_flatten: list[fx.Node] = []
    node, flatten = unit, None
    while len(node.users) == 1:
        (user,) = node.users
        module = modules.get(user.target) if user.op == "call_module" else None
        if isinstance(module, CHANNELWISE_MODULES) and flatten is None:
            chain.append(user)
        elif user.op == "call_function" and user.target in FLATTENS and user.args[1:] == (1,) and flatten is None:
            flatten = user
        elif isinstance(module, nn.Dropout) and flatten is not None:
            after_flatten.append(user)
        elif isinstance(module, nn.Linear) and flatten is not None:
            return chain, user, flatten, after_flatten
        elif isinstance(module, nn.Conv2d) and module.groups == 1 and flatten is None:
            return chain, user, None, []
        else:
            break
        node = user
    return [], None, None, []


def _subgraph(
    graph: fx.GraphModule, nodes: list[fx.Node], inputs: list[fx.Node], outputs: list[fx.Node], as_tuple: bool = False
) -> fx.GraphModule:
    """A module computing `outputs` from `inputs` with `nodes` (in order) of `graph`: one tensor, or a tuple."""
    sub = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for node in inputs:
        env[node] = sub.placeholder(node.name)
    for node in nodes:
        if node.op == "placeholder":
            env[node] = sub.placeholder(node.name)
        else:
            env[node] = sub.node_copy(node, lambda arg: env[arg])
    sub.output(tuple(env[node] for node in outputs) if as_tuple else env[outputs[0]])
    return fx.GraphModule(graph, sub)
