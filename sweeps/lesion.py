"""The lesion engine: the loss and accuracy of a VGG16 with each conv filter's output map set to zero.

A lesion zeroes a filter's output map after its nonlinearity (METHOD). Three things make the sweep fast
while keeping it exact:

1. The network up to the lesioned layer (the prefix) runs once per batch of images and is reused for
   every filter of that layer.
2. Many lesions share one forward pass: the lesion dimension is folded into the batch, with the number of
   lesions per pass chosen from a memory budget (or given).
3. The next linear map (the next conv, or fc6 after the last conv) is linear in its input, so its
   pre-activation with channel k zeroed is the intact pre-activation minus the contribution of channel k
   alone: a single-channel conv (or a slice of fc6) per lesion instead of a full conv. Max- and average
   pooling between them act per channel and keep a zeroed channel at zero, so they run once, unlesioned.

`reference_lesion_sweep` is the naive definition (a hook that zeroes the channel, one full forward pass
per filter); tests and the benchmark hold `lesion_sweep` to it.
"""

from __future__ import annotations

import contextlib
import copy
import threading
import warnings
from dataclasses import dataclass
from typing import Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import psutil
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from lightning_modules.vgg import CONV_LAYERS, VGG, conv_indices, filters_per_layer, relu_indices

ImagesByTask = Mapping[str, tuple[torch.Tensor, torch.Tensor]]
RESULT_COLUMNS = ("layer", "layer_index", "filter", "task", "loss", "accuracy", "intact_loss", "intact_accuracy")
DEFAULT_BATCH_SIZE = 128
BYTES_PER_FLOAT = 4
# Pooling and similar per-channel maps allowed between a lesioned ReLU and the next linear map: each maps
# an all-zero channel to an all-zero channel and mixes no channels.
CHANNELWISE_MODULES = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Identity, nn.Dropout)


# --------------------------------------------------------------------------------------------- lesions


def check_lesions(model: VGG, lesions: Mapping[str, Sequence[int]]) -> None:
    """Raise ValueError for an unknown layer name or a filter index outside the layer."""
    sizes = filters_per_layer(model)
    for layer, filters in lesions.items():
        if layer not in sizes:
            raise ValueError(f"cannot lesion {layer!r}: conv layers are {', '.join(CONV_LAYERS)}")
        bad = [f for f in filters if not 0 <= int(f) < sizes[layer]]
        if bad:
            raise ValueError(f"{layer} has {sizes[layer]} filters; cannot lesion {bad}")


@contextlib.contextmanager
def lesioned(model: VGG, lesions: Mapping[str, Sequence[int]]) -> Iterator[VGG]:
    """Within the block, `model` runs with the given filters' output maps zeroed after their ReLU.

    `lesions` maps conv layer names (conv1_1 ... conv5_3) to filter indices; forward hooks on the ReLUs
    named by `relu_indices` do the zeroing and are removed on exit.
    """
    check_lesions(model, lesions)
    relus = relu_indices(model)
    handles = []
    for layer, filters in lesions.items():
        if len(filters) == 0:
            continue
        index = torch.as_tensor(sorted({int(f) for f in filters}), dtype=torch.long)
        handles.append(model.features[relus[layer]].register_forward_hook(_zero_channels_hook(index)))
    try:
        yield model
    finally:
        for handle in handles:
            handle.remove()


def _zero_channels_hook(channels: torch.Tensor):
    """A forward hook replacing the module's output by a copy with `channels` set to zero."""

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
        return output.index_fill(1, channels.to(output.device), 0.0)

    return hook


# ----------------------------------------------------------------------------------------- the images


@dataclass(frozen=True)
class Stimuli:
    """All tasks' images in one tensor, with each image's label and task index."""

    images: torch.Tensor
    labels: torch.Tensor
    task_ids: torch.Tensor
    tasks: tuple[str, ...]

    @classmethod
    def from_tasks(cls, images_by_task: ImagesByTask) -> "Stimuli":
        """Concatenate the (images, labels) of each task, in mapping order."""
        if not images_by_task:
            raise ValueError("images_by_task is empty: give at least one task's (images, labels)")
        images, labels, task_ids = [], [], []
        for index, (task, (task_images, task_labels)) in enumerate(images_by_task.items()):
            if len(task_images) != len(task_labels) or len(task_images) == 0:
                raise ValueError(f"task {task!r}: need as many labels as images, and at least one image")
            images.append(task_images.float())
            labels.append(task_labels.long())
            task_ids.append(torch.full((len(task_labels),), index, dtype=torch.long))
        return cls(torch.cat(images), torch.cat(labels), torch.cat(task_ids), tuple(images_by_task))

    def batches(self, batch_size: int, device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """(images, labels, task ids) in consecutive batches, on `device`."""
        for start in range(0, len(self.labels), batch_size):
            stop = start + batch_size
            yield (self.images[start:stop].to(device), self.labels[start:stop].to(device),
                   self.task_ids[start:stop].to(device))

    def only(self, task: str) -> "Stimuli":
        """The images of one task alone (views: tasks are stored one after another)."""
        index = self.tasks.index(task)
        counts = self.counts()
        rows = slice(int(counts[:index].sum()), int(counts[: index + 1].sum()))
        return Stimuli(self.images[rows], self.labels[rows], torch.zeros(int(counts[index]), dtype=torch.long), (task,))

    def counts(self) -> np.ndarray:
        """Number of images of each task."""
        return np.bincount(self.task_ids.numpy(), minlength=len(self.tasks))

    def __reduce__(self):
        """Pickle the images as a numpy array: Ray's object store then shares them between the workers of a node
        (zero-copy, read-only) instead of copying them into every task, as it does with a torch tensor."""
        return _stimuli_from_numpy, (self.images.numpy(), self.labels, self.task_ids, self.tasks)


def _stimuli_from_numpy(images: np.ndarray, labels: torch.Tensor, task_ids: torch.Tensor,
                        tasks: tuple[str, ...]) -> Stimuli:
    """Unpickle `Stimuli`; the images stay in the (possibly read-only, shared) numpy buffer, which is only read."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return Stimuli(torch.from_numpy(images), labels, task_ids, tasks)


class TaskTotals:
    """Running sums of cross-entropy and correct top-1 answers, per lesion and task."""

    def __init__(self, num_lesions: int, num_tasks: int):
        self.loss = torch.zeros(num_lesions, num_tasks, dtype=torch.float64)
        self.correct = torch.zeros(num_lesions, num_tasks, dtype=torch.float64)

    def add(self, rows: slice, logits: torch.Tensor, labels: torch.Tensor, task_ids: torch.Tensor) -> None:
        """Add a pass over B images and K lesions: `logits` (B*K, classes), image-major; `labels`, `task_ids` (B,)."""
        lesions = rows.stop - rows.start
        repeated = labels.repeat_interleave(lesions)
        loss = F.cross_entropy(logits, repeated, reduction="none").view(-1, lesions)
        correct = (logits.argmax(dim=1) == repeated).view(-1, lesions)
        num_tasks = self.loss.shape[1]
        self.loss[rows] += _sum_by_task(loss, task_ids, num_tasks)
        self.correct[rows] += _sum_by_task(correct, task_ids, num_tasks)

    def means(self, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean loss and accuracy, (lesions, tasks)."""
        return self.loss.numpy() / counts, self.correct.numpy() / counts


def _sum_by_task(values: torch.Tensor, task_ids: torch.Tensor, num_tasks: int) -> torch.Tensor:
    """Sum (B, K) values over images of each task: (K, num_tasks), float64, on the CPU."""
    totals = torch.zeros(values.shape[1], num_tasks, dtype=torch.float64, device=values.device)
    totals.index_add_(1, task_ids, values.t().double())
    return totals.cpu()


# --------------------------------------------------------------------------------- splitting the model


@dataclass(frozen=True)
class LayerSplit:
    """A VGG cut around one conv layer's ReLU: prefix -> per-channel maps -> next linear map -> suffix."""

    prefix: nn.Module  # input -> the layer's output maps after ReLU
    channelwise: nn.Module  # pooling between the ReLU and the next linear map
    linear: nn.Conv2d | nn.Linear  # the next conv, or fc6 after the last conv
    suffix: nn.Module  # the next linear map's pre-activation -> logits

    @property
    def flattens(self) -> bool:
        """True when the next linear map is fc6, which takes the flattened feature maps."""
        return isinstance(self.linear, nn.Linear)

    def lesion_input(self, activations: torch.Tensor) -> torch.Tensor:
        """The per-channel maps applied to the layer's output: the input of the next linear map, unflattened."""
        return self.channelwise(activations)

    def pre_activation(self, linear_input: torch.Tensor) -> torch.Tensor:
        """The next linear map's output (with bias) on the intact input."""
        return self.linear(torch.flatten(linear_input, 1) if self.flattens else linear_input)

    def channel_contributions(self, linear_input: torch.Tensor, channels: torch.Tensor) -> torch.Tensor:
        """What each of `channels` alone adds to the next pre-activation: (B, K, *pre-activation shape)."""
        selected = linear_input.index_select(1, channels)
        if self.flattens:
            weight = self.linear.weight.view(self.linear.out_features, linear_input.shape[1], -1)
            return torch.einsum("bks,hks->bkh", selected.flatten(2), weight.index_select(1, channels))
        conv = self.linear
        weight = conv.weight.index_select(1, channels).transpose(0, 1).reshape(-1, 1, *conv.kernel_size)
        out = F.conv2d(selected, weight, None, conv.stride, conv.padding, conv.dilation, groups=len(channels))
        return out.view(out.shape[0], len(channels), conv.out_channels, *out.shape[2:])


def split_at(model: VGG, layer: str) -> LayerSplit:
    """Cut `model` around `layer`'s ReLU (see LayerSplit); modules are shared, not copied."""
    relu = relu_indices(model)[layer]
    convs = [i for i in conv_indices(model).values() if i > relu]
    tail = nn.Sequential(model.avgpool, nn.Flatten(1))
    if convs:
        nxt = convs[0]
        channelwise = model.features[relu + 1: nxt]
        linear = model.features[nxt]
        suffix = nn.Sequential(*model.features[nxt + 1:], *tail, *model.classifier)
    else:
        channelwise = nn.Sequential(*model.features[relu + 1:], model.avgpool)
        linear = model.classifier[0]
        suffix = nn.Sequential(*model.classifier[1:])
    _check_channelwise(channelwise, layer)
    if isinstance(linear, nn.Conv2d) and linear.groups != 1:
        raise ValueError(f"the conv after {layer} is grouped; the lesion engine needs a full conv")
    return LayerSplit(model.features[: relu + 1], channelwise, linear, suffix)


def _check_channelwise(modules: nn.Sequential, layer: str) -> None:
    for module in modules:
        if not isinstance(module, CHANNELWISE_MODULES):
            raise ValueError(f"{type(module).__name__} after {layer}'s ReLU mixes or shifts channels; "
                             "the lesion engine supports only pooling there")


# ---------------------------------------------------------------------------------------- memory plan


@dataclass(frozen=True)
class PassPlan:
    """How one layer's lesions are grouped: images per pass and lesions per pass."""

    images_per_pass: int
    lesions_per_pass: int


def activation_sizes(model: VGG, image_shape: Sequence[int]) -> dict[str, int]:
    """Per image, for each conv layer: floats held per lesion (`<layer>`) and once per image (`<layer>:shared`).

    Per lesion: the lesioned pre-activation of the next linear map, the channel's contribution, their
    difference, and the suffix's two largest activations. Per image: the layer's output, the next map's
    input and its intact pre-activation.
    """
    sizes: dict[int, int] = {}
    hooks = [module.register_forward_hook(_record_numel(sizes, i)) for i, module in enumerate(model.features)]
    try:
        with torch.inference_mode():
            probe = torch.zeros(1, *image_shape, device=next(model.parameters()).device)
            pooled = model.avgpool(model.features(probe))
    finally:
        for hook in hooks:
            hook.remove()
    # Every activation in forward order: the feature maps, the pooled maps, fc6, fc7 and the output.
    outputs = [sizes[i] for i in range(len(model.features))] + [pooled.numel()]
    outputs += [m.out_features for m in model.classifier if isinstance(m, nn.Linear)]
    convs = list(conv_indices(model).values())
    result: dict[str, int] = {}
    for layer, relu in relu_indices(model).items():
        later = [i for i in convs if i > relu]
        pre = later[0] if later else len(model.features) + 1  # position of the next linear map's output
        result[layer] = 3 * outputs[pre] + sum(sorted(outputs[pre:])[-2:])
        result[f"{layer}:shared"] = outputs[relu] + outputs[pre - 1] + outputs[pre]
    return result


def _record_numel(sizes: dict[int, int], index: int):
    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        sizes[index] = output[0].numel()

    return hook


def plan_passes(per_lesion_floats: int, shared_floats: int, num_images: int, num_lesions: int,
                batch_size: int | None, lesions_per_pass: int | None, budget_bytes: int) -> PassPlan:
    """Fit a pass (B images x K lesions) into `budget_bytes`; given sizes are used as they are."""
    images = min(batch_size or DEFAULT_BATCH_SIZE, num_images)
    if lesions_per_pass is not None:
        return PassPlan(images, max(1, min(lesions_per_pass, num_lesions)))
    per_image = BYTES_PER_FLOAT * (shared_floats + per_lesion_floats)
    if batch_size is None:
        images = max(1, min(images, budget_bytes // per_image))
    fits = (budget_bytes // images - BYTES_PER_FLOAT * shared_floats) // (BYTES_PER_FLOAT * per_lesion_floats)
    return PassPlan(images, int(max(1, min(fits, num_lesions))))


def free_memory(device: torch.device) -> int:
    """Free bytes on `device`: GPU memory for CUDA, available RAM otherwise."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return psutil.virtual_memory().available


def default_budget(device: torch.device) -> int:
    """The default memory budget: half of the device's free memory."""
    return free_memory(device) // 2


class PeakMemory:
    """Peak memory above the starting level during a block: CUDA allocator peak, or sampled RSS on the CPU."""

    def __init__(self, device: torch.device, interval_s: float = 0.005):
        self.device = device
        self.interval_s = interval_s
        self.peak_bytes = 0
        self._stop = threading.Event()

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self._process = psutil.Process()
            self._start = self._process.memory_info().rss
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak_bytes = max(self.peak_bytes, self._process.memory_info().rss - self._start)

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device) - self._start
        else:
            self._stop.set()
            self._thread.join()


@contextlib.contextmanager
def tf32(allowed: bool) -> Iterator[None]:
    """Allow or forbid TF32 matmuls and convolutions on CUDA within the block (forbidden = exact float32)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = allowed
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@contextlib.contextmanager
def on_device(model: VGG, device: torch.device | str | None) -> Iterator[tuple[VGG, torch.device]]:
    """`model` in eval mode on `device` (default: where it is); a copy when it has to move, so the caller's stays put."""
    current = next(model.parameters()).device
    target = torch.device(device) if device is not None else current
    if target.type == "cuda" and target.index is None:
        target = torch.device("cuda", torch.cuda.current_device())
    moved = model if target == current else copy.deepcopy(model).to(target)
    was_training = moved.training
    moved.eval()
    try:
        yield moved, target
    finally:
        moved.train(was_training)


# -------------------------------------------------------------------------------------- the fast sweep


def sweep_layer(model: VGG, layer: str, filters: Sequence[int], stimuli: Stimuli, plan: PassPlan,
                base: Sequence[int] = (), progress: tqdm | None = None) -> TaskTotals:
    """Loss and correct-answer sums per task with each of `filters` lesioned in `layer`, on top of `base`.

    `base` filters stay lesioned throughout (greedy ranking); `model` must be in eval mode on its device.
    """
    device = next(model.parameters()).device
    split = split_at(model, layer)
    chosen = torch.as_tensor(list(filters), dtype=torch.long, device=device)
    base_channels = torch.as_tensor(list(base), dtype=torch.long, device=device)
    totals = TaskTotals(len(chosen), len(stimuli.tasks))
    with torch.inference_mode():
        for images, labels, task_ids in stimuli.batches(plan.images_per_pass, device):
            activations = split.prefix(images)
            if len(base_channels):
                activations = activations.index_fill(1, base_channels, 0.0)
            linear_input = split.lesion_input(activations)
            intact = split.pre_activation(linear_input)
            for start in range(0, len(chosen), plan.lesions_per_pass):
                rows = slice(start, min(start + plan.lesions_per_pass, len(chosen)))
                contribution = split.channel_contributions(linear_input, chosen[rows])
                logits = split.suffix((intact.unsqueeze(1) - contribution).flatten(0, 1))
                totals.add(rows, logits, labels, task_ids)
                if progress is not None:
                    progress.update((rows.stop - rows.start) * len(labels))
    return totals


def intact_totals(model: VGG, stimuli: Stimuli, batch_size: int) -> TaskTotals:
    """Loss and correct-answer sums per task of the unlesioned `model` (eval mode, on its device)."""
    device = next(model.parameters()).device
    totals = TaskTotals(1, len(stimuli.tasks))
    with torch.inference_mode():
        for images, labels, task_ids in stimuli.batches(batch_size, device):
            totals.add(slice(0, 1), model(images), labels, task_ids)
    return totals


def layer_plan(model: VGG, layer: str, num_images: int, num_lesions: int, batch_size: int | None,
               lesions_per_pass: int | None, budget_bytes: int, image_shape: Sequence[int]) -> PassPlan:
    """The pass plan of one layer for `model` at `image_shape` (C, H, W) within `budget_bytes`."""
    sizes = activation_sizes(model, image_shape)
    return plan_passes(sizes[layer], sizes[f"{layer}:shared"], num_images, num_lesions, batch_size,
                       lesions_per_pass, budget_bytes)


def lesion_frame(layer: str, filters: Sequence[int], totals: TaskTotals, stimuli: Stimuli) -> pd.DataFrame:
    """Rows (layer, layer_index, filter, task, loss, accuracy) of lesions of one layer."""
    loss, accuracy = totals.means(stimuli.counts())
    num_tasks = len(stimuli.tasks)
    return pd.DataFrame({
        "layer": layer,
        "layer_index": CONV_LAYERS.index(layer) + 1,
        "filter": np.repeat(np.asarray(filters, dtype=np.int64), num_tasks),
        "task": np.tile(np.asarray(stimuli.tasks, dtype=object), len(filters)),
        "loss": loss.ravel(),
        "accuracy": accuracy.ravel(),
    })


def intact_frame(totals: TaskTotals, stimuli: Stimuli) -> pd.DataFrame:
    """Rows (task, intact_loss, intact_accuracy) of the unlesioned network."""
    loss, accuracy = totals.means(stimuli.counts())
    return pd.DataFrame({"task": list(stimuli.tasks), "intact_loss": loss[0], "intact_accuracy": accuracy[0]})


def with_intact(lesions: pd.DataFrame, intact: pd.DataFrame) -> pd.DataFrame:
    """Lesion rows joined with the intact loss and accuracy of their task, in RESULT_COLUMNS order."""
    return lesions.merge(intact, on="task", how="left", validate="many_to_one")[list(RESULT_COLUMNS)]


def lesion_sweep(model: VGG, images_by_task: ImagesByTask, layers: Sequence[str] | None = None,
                 batch_size: int | None = None, device: torch.device | str | None = None, *,
                 memory_budget: int | None = None, lesions_per_pass: int | None = None,
                 allow_tf32: bool = False, progress: bool = False) -> pd.DataFrame:
    """Lesion every filter of `layers` (default: all 13 conv layers) alone; one row per (layer, filter, task).

    `images_by_task` maps a task to (images, labels), labels in the model's output space. Columns: layer,
    layer_index (1..13), filter, task, loss (mean cross-entropy), accuracy (top-1), intact_loss,
    intact_accuracy. `memory_budget` (bytes; default half the device's free memory) bounds the images and
    lesions per pass unless `batch_size` / `lesions_per_pass` fix them. TF32 stays off unless allowed.
    `frame.attrs` holds peak_memory_bytes, memory_budget_bytes and the pass plan of each layer.
    """
    layers = list(layers or CONV_LAYERS)
    stimuli = Stimuli.from_tasks(images_by_task)
    with on_device(model, device) as (net, target), tf32(allow_tf32):
        check_lesions(net, {layer: [] for layer in layers})
        budget = memory_budget or default_budget(target)
        sizes = filters_per_layer(net)
        plans = {layer: layer_plan(net, layer, len(stimuli.labels), sizes[layer], batch_size, lesions_per_pass,
                                   budget, stimuli.images.shape[1:]) for layer in layers}
        total = len(stimuli.labels) * sum(sizes[layer] for layer in layers)
        with PeakMemory(target) as peak, tqdm(total=total, unit="img", disable=not progress, desc="lesions") as bar:
            intact = intact_totals(net, stimuli, plans[layers[0]].images_per_pass)
            frames = [lesion_frame(layer, range(sizes[layer]),
                                   sweep_layer(net, layer, range(sizes[layer]), stimuli, plans[layer], progress=bar),
                                   stimuli) for layer in layers]
    frame = with_intact(pd.concat(frames, ignore_index=True), intact_frame(intact, stimuli))
    frame.attrs.update(peak_memory_bytes=int(peak.peak_bytes), memory_budget_bytes=int(budget),
                       plans={layer: vars(plan) for layer, plan in plans.items()})
    return frame


# ------------------------------------------------------------------------------ the naive reference


def reference_lesion_sweep(model: VGG, images_by_task: ImagesByTask, layers: Sequence[str] | None = None,
                           batch_size: int = DEFAULT_BATCH_SIZE, device: torch.device | str | None = None,
                           filters: Mapping[str, Sequence[int]] | None = None) -> pd.DataFrame:
    """The definition `lesion_sweep` must match: per filter, a hook zeroes it and a full forward pass runs.

    `filters` optionally restricts each layer to some filters (the benchmark times a sample). TF32 is off.
    """
    layers = list(layers or CONV_LAYERS)
    stimuli = Stimuli.from_tasks(images_by_task)
    with on_device(model, device) as (net, _), tf32(False):
        sizes = filters_per_layer(net)
        intact = intact_totals(net, stimuli, batch_size)
        frames = []
        for layer in layers:
            chosen = list(filters[layer]) if filters else list(range(sizes[layer]))
            totals = TaskTotals(len(chosen), len(stimuli.tasks))
            for row, index in enumerate(chosen):
                with lesioned(net, {layer: [index]}):
                    single = intact_totals(net, stimuli, batch_size)
                totals.loss[row], totals.correct[row] = single.loss[0], single.correct[0]
            frames.append(lesion_frame(layer, chosen, totals, stimuli))
    return with_intact(pd.concat(frames, ignore_index=True), intact_frame(intact, stimuli))
