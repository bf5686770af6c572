"""Representational similarity analysis (RSA): how well each layer of each network matches human similarity
judgements of the same stimuli.

For every network and layer (default: all 16, whole activation maps), an RDM over the behavioural stimuli
(default 1 - Pearson r between two stimuli's activation patterns; Euclidean or cosine distance as options) is
compared with each participant's behavioural RDM (rsatoolbox: Spearman rho by default, Kendall tau-a or
Pearson r as options); the mean across participants is reported with its error bar (by default the paper's: a 95%
percentile interval of the mean over participants resampled with replacement; or mean +- SEM) beside the
participants' noise ceiling (rsatoolbox's leave-one-out bounds: lower = each participant against the mean of the
others, upper = against the mean of all, averaged over participants; for rank comparisons the mean is over
rank-transformed RDMs). The ceiling of a layer is computed on the stimulus pairs its comparison uses: pairs undefined
in the layer's RDM (a stimulus with a constant pattern) are left out of both.
Layer RDMs are computed from the stored activations in chunks of features (a Gram matrix), so whole conv maps
of large images never need to fit in memory.

Output directory:
  activations/                       the extracted activations of the stimuli (`analysis.representations.activations`)
  rdms/<network>/<layer>.npy         each layer's RDM, rows in rdms/<network>/stimuli.txt order (the behavioural
                                     data format: usable as a planted RDM for synthetic participants)
  rsa_participants.parquet           network, layer, layer_index, participant, correlation
  rsa.parquet                        network, layer, layer_index, correlation (mean), sem, low, high (the error
                                     bar), participants, noise_ceiling_lower, noise_ceiling_upper
  summary.json, figures/rsa_by_layer.png|svg, config.json, manifest.json
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.bootstrap import percentile_interval
from analysis.representations.activations import (
    FileImages,
    Network,
    extract_activations,
    for_networks,
    layer_order,
    model_artifacts,
    network_hashes,
)
from analysis.representations.settings import RSASettings
from common.io import file_sha256, write_json, write_parquet
from common.stage import StageDir
from common.wandb_runs import StageLog, figures_in, logging_to, table_artifact
from lightning_modules.layer_names import LAYER_NAMES

CHUNK_VALUES = 1 << 24  # activation values read at once when computing an RDM


def gram_statistics(features: np.ndarray, chunk_values: int = CHUNK_VALUES) -> tuple[np.ndarray, np.ndarray, int]:
    """(Gram matrix X X^T, row sums, number of features) of (stimuli, ...) activations, in float64, reading
    `chunk_values` values at a time (features may be a memory map larger than memory)."""
    flat = features.reshape(len(features), -1)
    count, width = flat.shape
    gram, sums = np.zeros((count, count)), np.zeros(count)
    step = max(1, chunk_values // max(1, count))
    for start in range(0, width, step):
        block = np.asarray(flat[:, start : start + step], dtype=np.float64)
        gram += block @ block.T
        sums += block.sum(axis=1)
    return gram, sums, width


def rdm_from_features(features: np.ndarray, distance: str = "correlation") -> np.ndarray:
    """The stimuli x stimuli RDM of (stimuli, ...) activations: 1 - Pearson r ("correlation"), 1 - cosine similarity
    ("cosine") or Euclidean distance ("euclidean"). A stimulus whose pattern is constant (correlation) or zero
    (cosine) has no defined distance: its row and column are NaN (left out of comparisons)."""
    gram, sums, width = gram_statistics(features)
    if distance == "euclidean":
        squared = np.diag(gram)[:, None] + np.diag(gram)[None, :] - 2 * gram
        rdm = np.sqrt(np.clip(squared, 0.0, None))
    else:
        products = gram - np.outer(sums, sums) / width if distance == "correlation" else gram
        norms = np.sqrt(np.clip(np.diag(products), 0.0, None))
        with np.errstate(divide="ignore", invalid="ignore"):
            rdm = 1.0 - products / np.outer(norms, norms)
        rdm[norms == 0, :] = rdm[:, norms == 0] = np.nan
    rdm = (rdm + rdm.T) / 2
    np.fill_diagonal(rdm, 0.0)
    return rdm


def compare_with_participants(
    model_rdm: np.ndarray, participant_rdms: np.ndarray, method: str = "spearman"
) -> np.ndarray:
    """rsatoolbox's comparison of one model RDM (N x N) with each participant's (P x N x N): P values. Stimulus
    pairs that are NaN in the model RDM are left out."""
    from rsatoolbox.rdm import RDMs, compare

    undefined = np.isnan(model_rdm)
    participant_rdms = np.where(undefined, np.nan, participant_rdms)  # rsatoolbox drops pairs NaN in both alike
    return compare(RDMs(model_rdm[None]), RDMs(participant_rdms), method=method)[0]


def noise_ceiling(
    participant_rdms: np.ndarray, method: str = "spearman", model_rdm: np.ndarray | None = None
) -> tuple[float, float]:
    """rsatoolbox's noise ceiling (lower: leave-one-out, upper: all participants) of P x N x N RDMs, on the stimulus
    pairs defined in `model_rdm` when given (those `compare_with_participants` uses)."""
    from rsatoolbox.inference import boot_noise_ceiling
    from rsatoolbox.rdm import RDMs

    if model_rdm is not None:
        participant_rdms = np.where(np.isnan(model_rdm), np.nan, participant_rdms)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Noise ceiling for tau based on averaged ranks")
        lower, upper = boot_noise_ceiling(RDMs(participant_rdms), method=method, rdm_descriptor="index")
    return float(lower), float(upper)


def layer_correlations(
    network: str, layer: str, rdm: np.ndarray, behaviour: Any, method: str, layers: Sequence[str] = LAYER_NAMES
) -> pd.DataFrame:
    """The comparison of one layer's RDM with every participant: network, layer, layer_index (its place among the
    network's representation layers `layers`, in forward order; VGG16's by default), participant, correlation."""
    values = compare_with_participants(rdm, behaviour.rdms, method)
    return pd.DataFrame(
        {
            "network": network,
            "layer": layer,
            "layer_index": list(layers).index(layer),
            "participant": list(behaviour.participants),
            "correlation": values,
        }
    )


def participant_interval(values: np.ndarray, n_bootstraps: int, seed: int, level: float = 0.95) -> tuple[float, float]:
    """The percentile interval of the mean across participants, the participants resampled with replacement."""
    values = np.asarray(values, dtype=np.float64)
    draws = np.random.default_rng(seed).integers(0, len(values), size=(n_bootstraps, len(values)))
    low, high = percentile_interval(values[draws].mean(axis=1), level)
    return float(low), float(high)


def summarise(
    per_participant: pd.DataFrame, ceilings: Mapping[tuple[str, str], tuple[float, float]], settings: RSASettings
) -> pd.DataFrame:
    """Mean, SEM and the error bar (`low`, `high`: settings.error_bar) across participants per (network, layer),
    with the noise ceiling of each (network, layer) (`ceilings`)."""
    rows = []
    for (network, layer, layer_index), group in per_participant.groupby(
        ["network", "layer", "layer_index"], sort=False
    ):
        values = group["correlation"].to_numpy()
        mean, sem = float(values.mean()), float(values.std(ddof=1) / np.sqrt(len(values)))
        low, high = (
            participant_interval(values, settings.n_bootstraps, settings.seed)
            if settings.error_bar == "bootstrap"
            else (mean - sem, mean + sem)
        )
        lower, upper = ceilings[(network, layer)]
        rows.append(
            {
                "network": network,
                "layer": layer,
                "layer_index": layer_index,
                "correlation": mean,
                "sem": sem,
                "low": low,
                "high": high,
                "participants": len(values),
                "noise_ceiling_lower": lower,
                "noise_ceiling_upper": upper,
            }
        )
    return pd.DataFrame(rows)


def best_layers(summary: pd.DataFrame) -> dict[str, str]:
    """Per network, the layer whose RDM matches the participants best on average."""
    return {
        network: str(rows.loc[rows["correlation"].idxmax(), "layer"])
        for network, rows in summary.groupby("network", sort=False)
    }


def run_rsa(
    networks: Sequence[Network],
    stimulus_list: str | os.PathLike,
    behaviour_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    settings: RSASettings = RSASettings(),
    address: str | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """RSA of every network's layers against the participants in `behaviour_dir` (see the module docstring);
    returns the summary table, of a finished RSA as it is. The stimuli are the images of `stimulus_list` that the
    behavioural data names."""
    from analysis.figures import plot_layer_curves
    from data_pipeline.behaviour import read_behaviour, read_stimulus_list, write_behaviour

    behaviour = read_behaviour(behaviour_dir)
    stimuli = read_stimulus_list(stimulus_list)
    positions = stimuli.locate(behaviour.stimuli, behaviour.directory)
    images = FileImages("stimuli", tuple(str(stimuli.paths[i]) for i in positions), behaviour.stimuli)
    hashes = {os.fsdecode(file.name): file_sha256(file) for file in behaviour.files()}
    extraction = for_networks(settings.extraction, networks)
    stage = StageDir(
        Path(out_dir),
        "RSA",
        {
            "networks": network_hashes(networks),
            "behaviour": hashes,
            "stimuli": images.identity(),
            **extraction.result_fields(),
            "rsa": settings.result_fields(),
        },
    ).check()
    if stage.finished:
        return pd.read_parquet(stage.path / "rsa.parquet")
    out = stage.start(
        {
            "checkpoints": {n.name: str(n.checkpoint.resolve()) for n in networks},
            "stimulus_list": str(Path(stimulus_list).resolve()),
            "behaviour": str(Path(behaviour_dir).resolve()),
        }
    )
    with logging_to(None):  # the extraction is part of this stage's W&B run
        stored = extract_activations(networks, [images], out / "activations", extraction, address, progress)
    ceiling = noise_ceiling(behaviour.rdms, settings.comparison)
    ceilings: dict[tuple[str, str], tuple[float, float]] = {}
    frames, order = [], layer_order(networks)
    for (network, _), activations in stored.items():
        rdms = {layer: rdm_from_features(activations.layer(layer), settings.distance) for layer in extraction.layers}
        write_behaviour(out / "rdms" / network, behaviour.stimuli, rdms)
        frames += [
            layer_correlations(network, layer, rdm, behaviour, settings.comparison, order[network])
            for layer, rdm in rdms.items()
        ]
        for layer, rdm in rdms.items():  # the ceiling on the pairs each comparison uses
            defined = not np.isnan(rdm).any()
            ceilings[(network, layer)] = ceiling if defined else noise_ceiling(behaviour.rdms, settings.comparison, rdm)
    per_participant = pd.concat(frames, ignore_index=True)
    summary = summarise(per_participant, ceilings, settings)
    write_parquet(out / "rsa_participants.parquet", per_participant)
    write_parquet(out / "rsa.parquet", summary)
    title = f"{Path(behaviour_dir).resolve().name}: {len(behaviour.participants)} participants"
    plot_layer_curves(
        {title: summary.rename(columns={"correlation": "value"})},
        out / "figures" / "rsa_by_layer",
        f"{settings.comparison} correlation with behaviour (mean, "
        + ("95% bootstrap interval over participants)" if settings.error_bar == "bootstrap" else "± SEM)"),
        bands={title: ceiling},
        band_label="noise ceiling (all stimulus pairs)",
    )
    write_json(
        out / "summary.json",
        {
            "noise_ceiling": {"lower": ceiling[0], "upper": ceiling[1]},
            "best_layer": best_layers(summary),
            "participants": list(behaviour.participants),
            "stimuli": len(behaviour.stimuli),
            **settings.result_fields(),
            "results": summary.to_dict(orient="records"),
        },
    )
    stage.finish(
        "rsa",
        StageLog(
            summary={f"rsa/{row.network}/{row.layer}": float(row.correlation) for row in summary.itertuples()},
            tables={"rsa": summary},
            figures=figures_in(out / "figures"),
            uses=model_artifacts(networks, stage.identity["networks"]),
            makes=[table_artifact("rsa", out, ["rsa.parquet", "rsa_participants.parquet", "summary.json"])],
        ),
        behaviour_sha256=hashes,
        stimuli=len(behaviour.stimuli),
        checkpoints={n.name: str(n.checkpoint.resolve()) for n in networks},
        **extraction.result_fields(),
    )
    return summary
