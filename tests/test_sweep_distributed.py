"""The Ray-distributed sweep: equal to the in-process engine, greedy ranking, resumable after a killed driver,
complete after a killed worker. One local Ray session (2 CPUs, `ray_cluster`) serves the module."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest
import ray
import torch
import torch.nn.functional as F
from helpers_faults import kill_first_process
from helpers_sweeps import tiny_images, tiny_vgg
from torch import nn

from common.errors import UserError
from common.ray_runner import Resources, unit_node
from lightning_modules.heads import OutputHeads
from lightning_modules.layer_names import CONV_LAYERS
from lightning_modules.vgg import filters_per_layer
from sweeps.class_totals import ClassTotals
from sweeps.distributed import distributed_sweep
from sweeps.engine import class_lesion_sweep, lesion_sweep
from sweeps.ranking import oneshot_ranking
from sweeps.settings import SweepSettings
from sweeps.stimuli import Stimuli

pytestmark = pytest.mark.slow
TESTS = Path(__file__).resolve().parent  # the driver subprocess runs here, so it imports helpers_sweeps
CLASS_TABLES = ("class_losses", "class_intact")


def test_stimuli_reach_ray_workers_without_a_copy(ray_cluster):
    images = torch.rand(512, 3, 64, 64)  # 25 MiB
    stimuli = Stimuli.from_tasks({"a": (images, torch.arange(512) % 3)})

    @ray.remote
    def receive(refs: list) -> tuple[Stimuli, int]:
        """The stimuli, and how much this worker's private memory grew on receiving them (modules loaded first)."""
        import sweeps.stimuli  # noqa: F401

        before = psutil.Process().memory_full_info().uss
        [received] = ray.get(refs)
        return received, psutil.Process().memory_full_info().uss - before

    back, growth = ray.get(receive.remote([ray.put(stimuli)]))
    assert growth < images.nbytes / 4  # the images stay in the node's shared object store; a copy would add 25 MiB
    assert torch.equal(back.images, images) and torch.equal(back.labels, stimuli.labels) and back.tasks == ("a",)


def test_ray_sweep_equals_in_process_sweep(ray_cluster, tmp_path):
    model, data = tiny_vgg(), tiny_images()
    filter_losses, ranking = distributed_sweep(model, data, tmp_path, SweepSettings(filters_per_task=8), progress=False)
    expected = lesion_sweep(model, data)
    assert list(filter_losses.columns) == list(expected.columns)
    assert (
        filter_losses[["layer", "filter", "task"]].to_numpy() == expected[["layer", "filter", "task"]].to_numpy()
    ).all()
    assert abs(filter_losses.loss - expected.loss).max() < 1e-5
    assert (filter_losses.accuracy == expected.accuracy).all()
    assert abs(filter_losses.intact_loss - expected.intact_loss).max() < 1e-5
    # One-shot ranking: per layer and task, highest loss first.
    top = ranking[ranking["rank"] == 0].merge(filter_losses, on=["layer", "task", "filter"], suffixes=("", "_sweep"))
    best = filter_losses.groupby(["layer", "task"]).loss.max()
    assert len(top) == 26
    assert all(abs(row.loss - best[(row.layer, row.task)]) < 1e-12 for row in top.itertuples())
    assert {"filter_losses.parquet", "ranking.parquet", "config.json"} <= {p.name for p in tmp_path.iterdir()}
    # Each chunk file records where it ran, beside its rows (the tables above hold only results): here, the one node.
    [node_id] = [node["NodeID"] for node in ray.nodes() if node["Alive"]]
    ran_on = [unit_node(path) for path in (tmp_path / "chunks" / "oneshot").glob("*.parquet")]
    assert ran_on and all(where["ray_node_id"] == node_id and where["node"] for where in ran_on)
    # the per-class table beside them: the same sums as in process, and the sweep's ranking to the last bit
    table = ClassTotals.from_frames(*(pd.read_parquet(tmp_path / f"{name}.parquet") for name in CLASS_TABLES))
    expected_table = class_lesion_sweep(model, data)
    assert (table.layers == expected_table.layers).all() and (table.filters == expected_table.filters).all()
    np.testing.assert_allclose(table.loss, expected_table.loss, rtol=1e-5)
    assert (table.correct == expected_table.correct).all() and (table.images == expected_table.images).all()
    pd.testing.assert_frame_equal(oneshot_ranking(table.task_losses({"a": [0, 1, 2], "b": [3, 4, 5]})), ranking)
    pd.testing.assert_frame_equal(table.task_losses({"a": [0, 1, 2], "b": [3, 4, 5]}), filter_losses)


def test_unfinished_sweep_of_an_older_version_is_refused_until_its_chunks_go(ray_cluster, tmp_path):
    model, data, settings = tiny_vgg(), tiny_images(), SweepSettings(layers=("conv5_3",), filters_per_task=16)
    distributed_sweep(model, data, tmp_path, settings, progress=False)
    # as an older version leaves a sweep killed midway: per-task chunks, config.json without the chunk format
    for name in ("ranking", "filter_losses", *CLASS_TABLES):
        (tmp_path / f"{name}.parquet").unlink()
    (tmp_path / "manifest.json").unlink()
    config = json.loads((tmp_path / "config.json").read_text())
    del config["chunks"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match=r"older version whose chunks lack per-class sums; delete .*chunks"):
        distributed_sweep(model, data, tmp_path, settings, progress=False)
    shutil.rmtree(tmp_path / "chunks")
    filter_losses, _ = distributed_sweep(model, data, tmp_path, settings, progress=False)
    assert (tmp_path / "class_losses.parquet").is_file() and len(filter_losses) == 2 * 32


def losses_with_lesions(
    model, layer: str, lesion_sets: list[list[int]], images: torch.Tensor, labels: torch.Tensor
) -> np.ndarray:
    """Mean cross-entropy with each set of `layer`'s filters zeroed after its ReLU, in plain torch (no lesion code):
    the maps up to the layer's ReLU once, then the rest of the network on every lesioned copy."""
    relu = [i for i, module in enumerate(model.features) if isinstance(module, nn.ReLU)][CONV_LAYERS.index(layer)]
    losses = []
    with torch.inference_mode():
        maps = model.features[: relu + 1](images)
        for start in range(0, len(lesion_sets), 16):
            group = lesion_sets[start : start + 16]
            copies = maps.unsqueeze(0).repeat(len(group), 1, 1, 1, 1)
            for copy, filters in zip(copies, group):
                copy[:, filters] = 0.0
            features = model.features[relu + 1 :](copies.flatten(0, 1))
            logits = model.classifier(torch.flatten(model.avgpool(features), 1))
            losses.append(
                F.cross_entropy(logits, labels.repeat(len(group)), reduction="none").view(len(group), -1).mean(1)
            )
    return torch.cat(losses).numpy()


def test_greedy_ranking_picks_each_rounds_highest_loss_filters(ray_cluster, tmp_path):
    # Width 3/16: conv5_3 has 96 filters, so METHOD's rounds pick round(1.6% x 96) = 2 filters each up to
    # round(20% x 96) = 19: nine rounds of 2, then a shorter last round of 1.
    # conv1_1 (12 filters): 1 per round, 2 rounds.
    model, data = tiny_vgg(seed=5, width=3 / 16), tiny_images(seed=6)
    layers, picks_per_round = ("conv1_1", "conv5_3"), {"conv1_1": [1, 1], "conv5_3": [2] * 9 + [1]}
    _, ranking = distributed_sweep(
        model, data, tmp_path, SweepSettings(layers=layers, filters_per_task=64, ranking="greedy"), progress=False
    )
    sizes = filters_per_layer(model)
    for layer in layers:
        for task, (images, labels) in data.items():
            rows = ranking[(ranking.layer == layer) & (ranking.task == task)].sort_values("rank")
            assert sorted(rows["filter"]) == list(range(sizes[layer]))
            order, recorded = rows["filter"].tolist(), rows["loss"].to_numpy()
            chosen = 0
            for round_index, count in enumerate(picks_per_round[layer]):
                base, remaining = order[:chosen], order[chosen:]
                if round_index:  # round r lesioned every remaining filter on top of those chosen before it
                    lesioned_in_round = pd.concat(
                        pd.read_parquet(path)
                        for path in (tmp_path / "chunks" / "greedy" / f"round_{round_index:02d}" / task).glob(
                            f"{layer}_*.parquet"
                        )
                    )
                    assert sorted(lesioned_in_round["filter"].unique()) == sorted(remaining)  # chunks: rows per class
                losses = losses_with_lesions(model, layer, [[*base, f] for f in remaining], images, labels)
                picked, others = losses[:count], losses[count:]
                # the round's picks are its highest-loss filters, highest first, recorded with that loss
                assert picked.min() >= others.max() - 1e-5, (layer, task, round_index)
                assert (np.diff(picked) <= 1e-5).all()
                np.testing.assert_allclose(recorded[chosen : chosen + count], picked, atol=1e-5)
                chosen += count
            # filters never chosen follow, by their loss in the last round
            np.testing.assert_allclose(recorded[chosen:], others, atol=1e-5)
            assert (np.diff(recorded[chosen:]) <= 1e-12).all()
    rounds = sorted(path.name for path in (tmp_path / "chunks" / "greedy").iterdir())
    assert rounds == [f"round_{r:02d}" for r in range(1, 10)]
    # conv1_1's two rounds are over after round 1; conv5_3 goes on alone
    assert {path.stem.rsplit("_", 1)[0] for path in (tmp_path / "chunks" / "greedy" / "round_02" / "a").iterdir()} == {
        "conv5_3"
    }
    # Greedy differs from one-shot somewhere, or the test would not tell them apart.
    oneshot = lesion_sweep(model, data, layers=list(layers))
    firsts = oneshot.sort_values("loss", ascending=False).groupby(["layer", "task"]).head(19)
    assert set(map(tuple, firsts[firsts.layer == "conv5_3"][["task", "filter"]].to_numpy())) != set(
        map(tuple, ranking[(ranking["rank"] < 19) & (ranking.layer == "conv5_3")][["task", "filter"]].to_numpy())
    )


def test_sweep_scored_by_other_heads_is_not_resumed(ray_cluster, tmp_path):
    model, data, settings = tiny_vgg(), tiny_images(), SweepSettings(layers=("conv5_3",), filters_per_task=32)
    separate, _ = distributed_sweep(model, data, tmp_path, settings, progress=False, heads=OutputHeads((3, 3)))
    with pytest.raises(UserError, match=r"another heads \(\[3, 3\], now None\)"):
        distributed_sweep(model, data, tmp_path, settings, progress=False)  # one softmax over all outputs
    shared, _ = distributed_sweep(model, data, tmp_path / "shared", settings, progress=False)
    assert (shared.loss - separate.loss).abs().min() > 1e-3


KILL_TEST_SETTINGS = SweepSettings(filters_per_task=4, lesions_per_pass=1, batch_size=8)
KILL_TEST_COUNTS = {"a": 24, "b": 24}


def sweep_script(out: Path, address: str) -> list[str]:
    """A driver process running the sweep that the test kills."""
    code = (
        "from helpers_sweeps import tiny_vgg, tiny_images; from common.ray_runner import Resources; "
        "from sweeps.distributed import distributed_sweep; from sweeps.settings import SweepSettings; "
        f"distributed_sweep(tiny_vgg(), tiny_images(counts={KILL_TEST_COUNTS!r}), {str(out)!r}, "
        f"{KILL_TEST_SETTINGS!r}, address={address!r}, progress=False)"
    )
    return [sys.executable, "-c", code]


def test_killed_driver_resumes_to_the_same_table(ray_cluster, tmp_path):
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    driver = subprocess.Popen(sweep_script(killed, ray_cluster), cwd=TESTS)
    chunks = killed / "chunks" / "oneshot"
    deadline = time.time() + 120
    while len(list(chunks.glob("*.parquet"))) < 3 and driver.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    before = {p.name: p.stat().st_mtime_ns for p in chunks.glob("*.parquet")}
    assert 3 <= len(before) < 132 and not (killed / "filter_losses.parquet").exists()

    subprocess.run(sweep_script(killed, ray_cluster), cwd=TESTS, check=True, timeout=300)
    after = {p.name: p.stat().st_mtime_ns for p in chunks.glob("*.parquet")}
    assert all(after[name] == mtime for name, mtime in before.items())  # finished chunks were not redone
    uninterrupted = distributed_sweep(
        tiny_vgg(), tiny_images(counts=KILL_TEST_COUNTS), clean, KILL_TEST_SETTINGS, progress=False
    )
    pd.testing.assert_frame_equal(pd.read_parquet(killed / "filter_losses.parquet"), uninterrupted[0])
    pd.testing.assert_frame_equal(pd.read_parquet(killed / "ranking.parquet"), uninterrupted[1])


def test_sweep_completes_when_a_worker_dies_mid_task(ray_cluster, tmp_path):
    model, data = tiny_vgg(seed=2), tiny_images(seed=3, counts={"a": 40, "b": 40})
    settings = SweepSettings(
        layers=("conv1_1", "conv3_1", "conv5_3"),
        filters_per_task=4,
        lesions_per_pass=1,
        batch_size=8,
        resources=Resources(max_retries=3),
    )
    stop = threading.Event()
    with ThreadPoolExecutor(1) as pool:
        killer = pool.submit(kill_first_process, "run_chunk", stop)
        filter_losses, _ = distributed_sweep(model, data, tmp_path, settings, progress=False)
        stop.set()
        killed_pid = killer.result()
    assert killed_pid is not None and not psutil.pid_exists(killed_pid)
    expected = lesion_sweep(model, data, layers=list(settings.layers))
    assert len(filter_losses) == len(expected) == 2 * (4 + 16 + 32)
    assert abs(filter_losses.loss - expected.loss).max() < 1e-5


def test_greedy_rounds_run_to_the_target_fraction_given(ray_cluster, tmp_path):
    # conv1_1 at width 3/16 has 12 filters: rounds of 1 up to round(0.5 x 12) = 6 (the default 0.2 stops at 2)
    model, data = tiny_vgg(seed=5, width=3 / 16), tiny_images(seed=6)
    settings = SweepSettings(layers=("conv1_1",), filters_per_task=64, ranking="greedy", greedy_target=0.5)
    distributed_sweep(model, data, tmp_path, settings, progress=False)
    rounds = sorted(path.name for path in (tmp_path / "chunks" / "greedy").iterdir())
    assert rounds == [f"round_{r:02d}" for r in range(1, 6)]
    assert json.loads((tmp_path / "manifest.json").read_text())["greedy_target"] == 0.5
    assert "greedy_target" not in replace(settings, ranking="oneshot").result_fields()  # changes no one-shot number


def test_ray_sweep_of_a_resnet_names_its_units_through_every_table(ray_cluster, tmp_path):
    from helpers_sweeps import tiny_network

    from common.errors import SettingError
    from lightning_modules.units import lesion_units

    model, data = tiny_network("resnet18", seed=2), tiny_images()
    layers = ("conv1", "layer1.0.conv1", "layer2.0", "layer4.1")
    settings = SweepSettings(layers=layers, filters_per_task=8)
    filter_losses, ranking = distributed_sweep(model, data, tmp_path, settings, progress=False)
    expected = lesion_sweep(model, data, layers=list(layers))
    pd.testing.assert_frame_equal(
        filter_losses[["layer", "layer_index", "filter", "task"]], expected[["layer", "layer_index", "filter", "task"]]
    )
    assert abs(filter_losses.loss - expected.loss).max() < 1e-5
    assert sorted(set(ranking.layer_index)) == [1, 2, 7, 17]
    table = ClassTotals.from_frames(*(pd.read_parquet(tmp_path / f"{name}.parquet") for name in CLASS_TABLES))
    assert table.units == tuple(lesion_units(model)) and list(dict.fromkeys(table.layers)) == list(layers)
    with pytest.raises(SettingError, match="unknown layer 'conv5_3'; choose from conv1, layer1.0.conv1"):
        distributed_sweep(model, data, tmp_path / "other", SweepSettings(layers=("conv5_3",)), progress=False)
