"""Feature visualisation: images that drive chosen filters of a layer, by gradient ascent on the input, beside
the natural test images that drive them most.

Gradient ascent (METHOD, from the authors' code; settings in `VisualizeSettings`): start from faint noise, then
for `steps` steps shift the image by a random jitter, take the filter's mean response over space before its ReLU
(the unit's pre-activation for fc layers, the logit for `output`), and step (Adam) up that response minus an L2
penalty on the pixels; every `blur_every` steps blur the image (Gaussian, `blur_sigma`), and keep pixels in the
normalised range [-1, 1]. All filters are optimised together, one image each (images do not interact in eval
mode), so a step costs one forward and backward pass of a batch, through the chosen layer only.

Filters are chosen by index or as a task's top-ranked filters of a lesion sweep. The natural images are the
test-split images (every task the network was trained on) with the highest activation (after the ReLU,
averaged over space, as `analysis.representations.activations` stores them).

Output directory, per layer and group (a task, or "chosen" for --filters):
  <layer>_<group>.png|svg          grid: one row per filter, its optimised image then its top natural images
  <layer>_<group>.parquet          filter, rank, activation of the optimised image, mean activation of random
                                   noise images, highest and mean activation over the natural test images
  <layer>_<group>_natural.parquet  filter, position, image_set, image, name, activation of the top natural images
  <layer>_<group>_images.npy       the optimised images (filters, 3, H, W), normalised as the network sees them
  activations/, config.json, manifest.json
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import fx, nn
from tqdm.auto import tqdm

from analysis.representations.activations import (
    Activations,
    Network,
    extract_activations,
    forward_layers,
    split_images,
)
from analysis.representations.settings import ActivationSettings, VisualizeSettings
from common.console import hidden
from common.errors import UserError
from common.io import atomic_path, readable_parquet, write_parquet
from common.ray_runner import Resources
from common.stage import StageDir
from common.wandb_runs import StageLog, figures_in, logging_to, model_artifact
from lightning_modules.units import OUTPUT, filters_per_unit, num_outputs, representation_layers, traced, walk
from sweeps.devices import on_device

RANDOM_IMAGES = 16  # white-noise images whose mean activation is the "random" baseline
CHOSEN = "chosen"


# ------------------------------------------------------------------------------------ responses of filters


def filter_count(model: nn.Module, layer: str) -> int:
    """Number of filters (a unit's channels) or units (a hidden fc layer, the output) of a representation layer."""
    units = filters_per_unit(model)
    if layer in units:
        return units[layer]
    if layer == OUTPUT:
        return num_outputs(model)
    return model.get_submodule(preactivation_node(model, layer).target).out_features


def preactivation_node(model: nn.Module, layer: str) -> fx.Node:
    """The traced graph's node of a representation layer's response before its ReLU (a conv after its batch norm, a
    ResNet block's residual sum, a hidden fc layer), or of the logits for `output`."""
    name = representation_layers(model)[layer]
    node = next(node for node in traced(model).graph.nodes if node.name == name)
    return node if layer == OUTPUT else node.args[0]


def preactivation(model: nn.Module, images: torch.Tensor, layer: str) -> torch.Tensor:
    """A layer's response before its ReLU (`preactivation_node`); nothing past it is computed."""
    if layer not in representation_layers(model):
        raise ValueError(f"unknown layer {layer!r}")
    target = preactivation_node(model, layer)
    for node, walked in walk(model, images):
        if node is target:
            return walked.env[node]
    raise AssertionError("the walk ended before the layer")


def own_filter(responses: torch.Tensor, filters: torch.Tensor) -> torch.Tensor:
    """Image i's response in filter filters[i], averaged over space: (images,)."""
    chosen = responses[torch.arange(len(filters), device=responses.device), filters]
    return chosen.flatten(1).mean(dim=1) if chosen.ndim > 1 else chosen


def filter_activations(model: nn.Module, images: torch.Tensor, layer: str) -> torch.Tensor:
    """Every filter's activation (after the ReLU, averaged over space) for each image: (images, filters)."""
    with torch.inference_mode():
        return forward_layers(model, images, [layer], "mean")[layer]


@contextlib.contextmanager
def frozen(model: nn.Module) -> Iterator[None]:
    """No gradients for the model's parameters within the block (the input alone is optimised)."""
    flags = [parameter.requires_grad for parameter in model.parameters()]
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter, flag in zip(model.parameters(), flags):
            parameter.requires_grad_(flag)


def optimise_images(
    model: nn.Module,
    layer: str,
    filters: Sequence[int],
    resolution: int,
    settings: VisualizeSettings = VisualizeSettings(),
    device: torch.device | str | None = None,
    progress: bool = True,
) -> torch.Tensor:
    """One image per filter that drives it (module docstring), (filters, 3, resolution, resolution) on the CPU."""
    from torchvision.transforms.functional import gaussian_blur

    generator = torch.Generator().manual_seed(settings.seed)
    start = settings.init_std * torch.randn(len(filters), 3, resolution, resolution, generator=generator)
    jitter, sigma = settings.jitter_pixels(resolution), settings.blur_pixels(resolution)
    kernel = 2 * math.ceil(3 * sigma) + 1
    with on_device(model, device) as (net, target), frozen(net):
        images = start.to(target).requires_grad_(True)
        wanted = torch.as_tensor(list(filters), device=target)
        optimiser = torch.optim.Adam([images], lr=settings.learning_rate)
        for step in tqdm(range(settings.steps), desc=f"{layer} gradient ascent", disable=hidden(progress)):
            shift = torch.randint(-jitter, jitter + 1, (2,), generator=generator).tolist()
            response = own_filter(preactivation(net, torch.roll(images, shift, dims=(2, 3)), layer), wanted)
            loss = -response.sum() + settings.l2 * images.square().mean(dim=(1, 2, 3)).sum()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            with torch.no_grad():
                if sigma > 0 and (step + 1) % settings.blur_every == 0:
                    images.copy_(gaussian_blur(images, [kernel, kernel], [sigma, sigma]))
                images.clamp_(-1.0, 1.0)
    return images.detach().cpu()


def random_images(count: int, resolution: int, seed: int) -> torch.Tensor:
    """White-noise images, uniform over the normalised pixel range [-1, 1]."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(count, 3, resolution, resolution, generator=generator) * 2 - 1


# ------------------------------------------------------------------------------------ choosing filters


@dataclass(frozen=True)
class FilterGroup:
    """Filters visualised together in one grid: a task's top-ranked filters (with ranks), or chosen ones."""

    label: str
    filters: tuple[int, ...]
    ranks: tuple[int, ...] | None = None


def parse_filters(text: str) -> tuple[int, ...]:
    """'0,5,9' -> (0, 5, 9); ValueError on anything but distinct non-negative integers."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts or not all(part.isdigit() for part in parts):
        raise ValueError(f"--filters takes comma-separated filter indices such as 0,5,9, not {text!r}")
    filters = tuple(int(part) for part in parts)
    if len(set(filters)) != len(filters):
        raise ValueError(f"--filters lists a filter twice ({text!r}); list each once")
    return filters


def check_filters(filters: Sequence[int], model: nn.Module, layer: str) -> None:
    """UserError when a filter index is outside the layer."""
    count = filter_count(model, layer)
    outside = [f for f in filters if not 0 <= f < count]
    if outside:
        raise UserError(f"{layer} has {count} filters (0-{count - 1}); filter {outside[0]} does not exist")


def top_ranked(
    sweep_dir: str | os.PathLike, layer: str, tasks: Sequence[str], top: int, checkpoint_sha256: str
) -> list[FilterGroup]:
    """Each task's `top` highest-ranked filters of `layer` in a lesion sweep of this very checkpoint."""
    from analysis.segregation.run import read_sweep

    sweep = read_sweep(sweep_dir)
    if sweep.manifest.get("checkpoint_sha256") != checkpoint_sha256:
        raise UserError(
            f"the sweep in {sweep.path} ranks the filters of another checkpoint; pass the sweep of "
            "--checkpoint (or the checkpoint of the sweep)"
        )
    groups = []
    for task in tasks:
        rows = sweep.ranking[(sweep.ranking["layer"] == layer) & (sweep.ranking["task"] == task)].sort_values("rank")
        if rows.empty:
            raise UserError(
                f"the sweep in {sweep.path} has no ranking of {layer} for task {task!r} (it has layers "
                f"{', '.join(sweep.layers)}, tasks {', '.join(sorted(set(sweep.ranking['task'])))})"
            )
        if top > len(rows):
            raise UserError(f"--top {top} but {layer} has {len(rows)} ranked filters; ask for at most {len(rows)}")
        groups.append(
            FilterGroup(
                task, tuple(int(f) for f in rows["filter"].iloc[:top]), tuple(int(r) for r in rows["rank"].iloc[:top])
            )
        )
    return groups


# ------------------------------------------------------------------------------------ natural images


@dataclass(frozen=True)
class NaturalImages:
    """The layer's activations (after ReLU, mean over space) of every test image of the network's tasks."""

    activations: Mapping[str, Activations]  # image set name -> stored activations
    betons: Mapping[str, str]

    def table(self, layer: str) -> tuple[np.ndarray, pd.DataFrame]:
        """(images x filters activations, table of image_set, image, name), all image sets stacked."""
        values = np.concatenate(
            [np.asarray(stored.layer(layer), dtype=np.float32) for stored in self.activations.values()]
        )
        tables = [stored.images().assign(image_set=name) for name, stored in self.activations.items()]
        return values, pd.concat(tables, ignore_index=True)[["image_set", "image", "name"]]

    def load(self, image_set: str, indices: Sequence[int], resolution: int) -> dict[int, torch.Tensor]:
        """Some images of a set with the eval transform, by index."""
        from data_pipeline.sample import stream_batches

        ordered = sorted(set(int(i) for i in indices))
        images = torch.cat([batch for batch, _ in stream_batches(self.betons[image_set], resolution, indices=ordered)])
        return dict(zip(ordered, images))


def natural_images(
    network: Network,
    tasks: Sequence[str],
    data_dir: str | os.PathLike,
    layer: str,
    out: Path,
    resources: Resources,
    address: str | None,
    progress: bool = True,
) -> NaturalImages:
    """Extract the layer's pooled activations of every task's test split (resumable, under out/activations)."""
    image_sets = [split_images(data_dir, task, "test") for task in tasks]
    settings = ActivationSettings(layers=(layer,), pooling="mean", resources=resources)
    stored = extract_activations([network], image_sets, out / "activations", settings, address, progress)
    return NaturalImages(
        {name: activations for (_, name), activations in stored.items()},
        {images.name: images.beton for images in image_sets},
    )


def top_natural(values: np.ndarray, table: pd.DataFrame, filters: Sequence[int], count: int) -> pd.DataFrame:
    """The `count` images with the highest activation of each filter: filter, position, image_set, image, name,
    activation."""
    rows = []
    for f in filters:
        order = np.argsort(-values[:, f], kind="stable")[:count]
        rows.append(table.iloc[order].assign(filter=f, position=range(len(order)), activation=values[order, f]))
    return pd.concat(rows, ignore_index=True)[["filter", "position", "image_set", "image", "name", "activation"]]


# ------------------------------------------------------------------------------------ the command


def displayable(image: torch.Tensor) -> np.ndarray:
    """A normalised CHW image as HxWx3 in [0, 1]."""
    return (image * 0.5 + 0.5).clamp(0, 1).permute(1, 2, 0).numpy()


def group_summary(
    group: FilterGroup,
    optimised: torch.Tensor,
    baseline: torch.Tensor,
    natural_values: np.ndarray | None,
    model: nn.Module,
    layer: str,
) -> pd.DataFrame:
    """Per filter: activation of its optimised image against the random and natural baselines."""
    wanted = list(group.filters)
    own = filter_activations(model, optimised, layer)[torch.arange(len(wanted)), wanted]
    frame = pd.DataFrame(
        {
            "filter": wanted,
            "rank": list(group.ranks) if group.ranks else None,
            "activation": own.numpy(),
            "random_activation": baseline[:, wanted].mean(0).numpy(),
        }
    )
    if natural_values is not None:
        frame["natural_max_activation"] = natural_values[:, wanted].max(0)
        frame["natural_mean_activation"] = natural_values[:, wanted].mean(0)
    return frame


def draw_group(
    stem: Path,
    layer: str,
    group: FilterGroup,
    optimised: torch.Tensor,
    summary: pd.DataFrame,
    natural: pd.DataFrame | None,
    loaded_images: Mapping[tuple[str, int], torch.Tensor],
) -> None:
    """The grid of one group: per filter, its optimised image and its top natural images."""
    from analysis.figures import plot_image_grid

    rows = []
    for index, row in enumerate(summary.itertuples()):
        images, captions = [displayable(optimised[index])], [f"optimised {row.activation:.2f}"]
        if natural is not None:
            for top in natural[natural["filter"] == row.filter].itertuples():
                images.append(displayable(loaded_images[(top.image_set, top.image)]))
                captions.append(f"{top.name} {top.activation:.2f}")
        rank = f" (rank {row.rank})" if group.ranks else ""
        rows.append((f"filter {row.filter}{rank}", images, captions))
    title = f"{layer}: " + (f"top filters for {group.label}" if group.ranks else "chosen filters")
    plot_image_grid(rows, stem, title, column_titles=["optimised"] + ["natural"] * (len(rows[0][1]) - 1))


def visualize_group(
    loaded,
    layer: str,
    group: FilterGroup,
    out: Path,
    natural: NaturalImages | None,
    settings: VisualizeSettings,
    device: torch.device | str,
    progress: bool,
) -> pd.DataFrame:
    """Optimise, measure and draw one group; writes its files (module docstring) and returns its summary."""
    resolution, stem = loaded.config.data.resolution, out / f"{layer}_{group.label}"
    optimised = optimise_images(loaded.model, layer, group.filters, resolution, settings, device, progress)
    baseline = filter_activations(loaded.model, random_images(RANDOM_IMAGES, resolution, settings.seed + 1), layer)
    values, table = natural.table(layer) if natural is not None else (None, None)
    summary = group_summary(group, optimised, baseline, values, loaded.model, layer)
    tops, images = None, {}
    if natural is not None and settings.natural_images:
        tops = top_natural(values, table, group.filters, settings.natural_images)
        for image_set, rows in tops.groupby("image_set"):
            images.update(
                {(image_set, i): image for i, image in natural.load(image_set, rows["image"], resolution).items()}
            )
        write_parquet(Path(f"{stem}_natural.parquet"), tops)
    with atomic_path(Path(f"{stem}_images.npy")) as tmp, open(tmp, "wb") as handle:
        np.save(handle, optimised.numpy())
    draw_group(stem, layer, group, optimised, summary, tops, images)
    write_parquet(Path(f"{stem}.parquet"), summary)
    return summary


def resolve_device(name: str) -> torch.device:
    """'auto' (a GPU when there is one), 'cpu', or 'cuda[:i]'; UserError for a GPU that is not there."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: no CUDA GPU is visible; use --device cpu")
    return device


def visualized_layer(layer: str, network: Network) -> str:
    """The layer `layer` names in `network`: itself, or the one a keyword (last_unit, penultimate) stands for in the
    network's architecture; UserError for a keyword of many (all), since a visualisation shows one layer."""
    from analysis.representations.activations import resolved_layers

    resolved = resolved_layers([layer], [network])
    if len(resolved) != 1:
        raise UserError(f"a visualisation shows one layer; name one instead of {layer!r} (e.g. last_unit)")
    return resolved[0]


def run_visualize(
    network: Network,
    layer: str,
    out_dir: str | os.PathLike,
    filters: Sequence[int] | None = None,
    top: int | None = None,
    tasks: Sequence[str] = (),
    sweep_dir: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    settings: VisualizeSettings = VisualizeSettings(),
    address: str | None = None,
    progress: bool = True,
) -> dict[str, pd.DataFrame]:
    """Visualise chosen filters (`filters`) or each task's `top` filters in a sweep of one layer (module
    docstring); groups already written are skipped, a finished visualisation is returned. Returns {group: summary}."""
    from analysis.representations.activations import with_layers
    from lightning_modules.checkpoint import load_model
    from sweeps.distributed import sweep_artifact

    loaded = with_layers(load_model(network.checkpoint), [layer], network.name)
    groups = choose_groups(loaded, layer, filters, top, tasks, sweep_dir)
    data = None if not settings.natural_images else str(Path(data_dir or loaded.config.data.dir).resolve())
    stage = StageDir(
        Path(out_dir),
        "feature visualisation",
        {
            "checkpoint_sha256": loaded.sha256,
            "layer": layer,
            "groups": [asdict(g) for g in groups],
            "settings": settings.result_fields(),
            "data": data,
        },
    ).check()
    stems = {group.label: stage.path / f"{layer}_{group.label}" for group in groups}
    if stage.finished:
        return {label: pd.read_parquet(f"{stem}.parquet") for label, stem in stems.items()}
    target = resolve_device(settings.device)
    out = stage.start({"checkpoint": str(network.checkpoint.resolve())})
    natural = None
    if settings.natural_images:
        with logging_to(None):  # the extraction is part of this stage's W&B run
            natural = natural_images(
                network, loaded.label_space.tasks, data, layer, out, settings.resources, address, progress
            )
    summaries = {
        group.label: pd.read_parquet(f"{stems[group.label]}.parquet")
        if readable_parquet(f"{stems[group.label]}.parquet")
        else visualize_group(loaded, layer, group, out, natural, settings, target, progress)
        for group in groups
    }
    stage.finish(
        "visualize",
        StageLog(
            tables=summaries,
            figures=figures_in(out),
            uses=[
                model_artifact(network.checkpoint, loaded.sha256),
                *([sweep_artifact(sweep_dir)] if sweep_dir else []),
            ],
        ),
        checkpoint=str(network.checkpoint.resolve()),
        checkpoint_sha256=loaded.sha256,
        layer=layer,
        seeds={"start": settings.seed},
        device=str(target),
        data=data,
    )
    return summaries


def choose_groups(
    loaded,
    layer: str,
    filters: Sequence[int] | None,
    top: int | None,
    tasks: Sequence[str],
    sweep_dir: str | os.PathLike | None,
) -> list[FilterGroup]:
    """The filter groups asked for: chosen filters, or each task's top-ranked ones (exactly one of the two)."""
    if (filters is None) == (top is None):
        raise UserError("choose filters with either --filters 0,5,9 or --top N --task TASK --sweep DIR")
    if filters is not None:
        check_filters(filters, loaded.model, layer)
        return [FilterGroup(CHOSEN, tuple(filters))]
    if top < 1 or not tasks or sweep_dir is None:
        raise UserError(
            "--top N needs N >= 1, --task TASK (one or more) and --sweep DIR (a `specialize lesion` output)"
        )
    return top_ranked(sweep_dir, layer, tasks, top, loaded.sha256)
