"""Does the sweep's shortcut pay for lesions of several filters? The evaluation engine, layer by layer, two ways.

A lesion of m of a layer's C filters, evaluated from the layer on: directly (the next linear map on a copy of its
input with the m channels zeroed, then the rest of the network) or by the shortcut (the intact pre-activation of that
map minus the contribution of the m channels alone: m/C of its multiply-adds, plus a subtraction on its output).
For each conv layer and each fraction m/C, times K lesions x B images both ways (median of interleaved repeats, in
CPU seconds of this process on one thread by default, which other work on a shared machine disturbs far less than
wall time), and reports the time ratio direct/shortcut (> 1: the shortcut pays), the multiply-add ratio of the pass,
and the largest logit difference between the two (float32 rounding). Then the multiply-add ratios of the same passes
at paper scale (VGG16 at full width, 224 px, 2,137 outputs), where timing on this machine is out of reach.

    python -m benchmarks.bench_lesion_shortcut [--width 0.0625 --resolution 48 --batch-norm] [--images 64 --lesions 8]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from lightning_modules.layer_names import CONV_LAYERS
from lightning_modules.vgg import VGG, filters_per_layer, relu_indices, vgg16
from sweeps.cost_model import lesion_pass_macs, module_macs
from sweeps.evaluation import Lesion, layer_logits
from sweeps.layer_split import split_at

FRACTIONS = (0.05, 0.1, 0.2, 0.3, 0.5)


def timed_logits(model: VGG, layer: str, activations: torch.Tensor, lesions: list, shortcut: bool) -> tuple:
    """(seconds, logits) of one layer's lesions in one pass, directly or by the shortcut."""
    indexed = list(enumerate(lesions))
    start = time.process_time()
    sizes = {len(lesion.filters) for lesion in lesions} if shortcut else set()
    [(_, logits)] = list(layer_logits(split_at(model, layer), activations, indexed, len(lesions), sizes))
    return time.process_time() - start, logits


def both_ways(
    model: VGG, layer: str, activations: torch.Tensor, lesions: list, repeats: int
) -> tuple[dict[bool, list[float]], float]:
    """CPU seconds of each repeat directly (False) and by the shortcut (True), interleaved; the largest difference of
    their logits."""
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(repeats):
        logits = {}
        for shortcut in (False, True):
            seconds, logits[shortcut] = timed_logits(model, layer, activations, lesions, shortcut)
            times[shortcut].append(seconds)
    return times, float((logits[True] - logits[False]).abs().max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=float, default=1 / 16)
    parser.add_argument("--resolution", type=int, default=48)
    parser.add_argument("--classes", type=int, default=120)
    parser.add_argument("--batch-norm", action="store_true")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--lesions", type=int, default=8, help="lesions per pass")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = vgg16(args.classes, width=args.width, batch_norm=args.batch_norm).eval()
    images = torch.randn(args.images, 3, args.resolution, args.resolution)
    shape = (3, args.resolution, args.resolution)
    relus, sizes, macs, rows = relu_indices(model), filters_per_layer(model), module_macs(model, shape), []
    with torch.inference_mode():
        for layer in CONV_LAYERS:
            activations = model.features[: relus[layer] + 1](images)
            for fraction in FRACTIONS:
                count = max(1, round(fraction * sizes[layer]))
                lesions = [Lesion.of(layer, torch.randperm(sizes[layer])[:count].tolist()) for _ in range(args.lesions)]
                times, difference = both_ways(model, layer, activations, lesions, args.repeats)
                direct_macs, shortcut_macs = lesion_pass_macs(model, layer, count, macs)
                rows.append(
                    {
                        "layer": layer,
                        "fraction": fraction,
                        "filters": count,
                        "direct_ms": round(1e3 * statistics.median(times[False]), 2),
                        "shortcut_ms": round(1e3 * statistics.median(times[True]), 2),
                        "time_ratio": round(statistics.median(times[False]) / statistics.median(times[True]), 3),
                        "mac_ratio": round(direct_macs / shortcut_macs, 3),
                        "max_logit_difference": difference,
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
    pays = [(row["layer"], row["fraction"]) for row in rows if row["time_ratio"] > 1.1]
    print(json.dumps({"config": vars(args), "time_ratio_above_1.1": pays}))
    print(json.dumps({"paper_scale_mac_ratio": paper_scale_mac_ratios()}))


def paper_scale_mac_ratios() -> dict[str, dict[float, float]]:
    """Multiply-add ratio direct/shortcut of a lesion pass, per layer and fraction, for VGG16 at paper scale."""
    model = vgg16(2137).eval()
    sizes, macs = filters_per_layer(model), module_macs(model, (3, 224, 224))
    ratios = {}
    for layer in CONV_LAYERS:
        passes = {f: lesion_pass_macs(model, layer, max(1, round(f * sizes[layer])), macs) for f in FRACTIONS}
        ratios[layer] = {f: round(direct / shortcut, 3) for f, (direct, shortcut) in passes.items()}
    return ratios


if __name__ == "__main__":
    main()
