"""The Ray-distributed sweep: equal to the in-process engine, greedy ranking, resumable after a killed driver,
complete after a killed worker. One local Ray session (2 CPUs) serves the module."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import psutil
import pytest
import torch

from common.ray_runner import Resources
from sweeps.distributed import distributed_sweep
from sweeps.engine import intact_totals, lesion_sweep
from sweeps.lesions import lesioned
from sweeps.settings import SweepSettings
from sweeps.stimuli import Stimuli
from helpers_faults import kill_first_process
from helpers_sweeps import tiny_images, tiny_vgg

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow
TESTS = Path(__file__).resolve().parent  # the driver subprocess runs here, so it imports helpers_sweeps


@pytest.fixture(scope="module")
def ray_address():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def test_stimuli_reach_ray_workers_without_a_copy(ray_address):
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


def test_ray_sweep_equals_in_process_sweep(ray_address, tmp_path):
    model, data = tiny_vgg(), tiny_images()
    filter_losses, ranking = distributed_sweep(model, data, tmp_path, SweepSettings(filters_per_task=8), progress=False)
    expected = lesion_sweep(model, data)
    assert list(filter_losses.columns) == list(expected.columns)
    assert (filter_losses[["layer", "filter", "task"]].to_numpy() == expected[["layer", "filter", "task"]].to_numpy()).all()
    assert abs(filter_losses.loss - expected.loss).max() < 1e-5
    assert (filter_losses.accuracy == expected.accuracy).all()
    assert abs(filter_losses.intact_loss - expected.intact_loss).max() < 1e-5
    # One-shot ranking: per layer and task, highest loss first.
    top = ranking[ranking["rank"] == 0].merge(filter_losses, on=["layer", "task", "filter"], suffixes=("", "_sweep"))
    best = filter_losses.groupby(["layer", "task"]).loss.max()
    assert len(top) == 26
    assert all(abs(row.loss - best[(row.layer, row.task)]) < 1e-12 for row in top.itertuples())
    assert {"filter_losses.parquet", "ranking.parquet", "config.json"} <= {p.name for p in tmp_path.iterdir()}


def test_greedy_ranking_lesions_each_pick_on_top_of_the_chosen(ray_address, tmp_path):
    model, data = tiny_vgg(seed=5), tiny_images(seed=6)
    layers = ("conv4_1", "conv5_3")  # 32 filters: 1 per round, 6 rounds
    _, ranking = distributed_sweep(model, data, tmp_path, SweepSettings(layers=layers, filters_per_task=8,
                                                                        ranking="greedy"), progress=False)
    stimuli = Stimuli.from_tasks(data)
    for layer in layers:
        for task in ("a", "b"):
            rows = ranking[(ranking.layer == layer) & (ranking.task == task)].sort_values("rank")
            assert sorted(rows["filter"]) == list(range(32))
            chosen = rows["filter"].tolist()[:6]
            for count in range(1, 7):  # the loss of pick i is that of the first i picks lesioned together
                with lesioned(model, {layer: chosen[:count]}), torch.inference_mode():
                    totals = intact_totals(model, stimuli.only(task), 128)
                assert abs(rows.loss.iloc[count - 1] - totals.loss[0, 0].item() / len(data[task][1])) < 1e-5
    # Greedy differs from one-shot somewhere, or the test would not tell them apart.
    oneshot = lesion_sweep(model, data, layers=list(layers))
    firsts = oneshot.sort_values("loss", ascending=False).groupby(["layer", "task"]).head(6)
    assert set(map(tuple, firsts[["layer", "task", "filter"]].to_numpy())) != set(
        map(tuple, ranking[ranking["rank"] < 6][["layer", "task", "filter"]].to_numpy()))


KILL_TEST_SETTINGS = SweepSettings(filters_per_task=4, lesions_per_pass=1, batch_size=8)
KILL_TEST_COUNTS = {"a": 24, "b": 24}


def sweep_script(out: Path, address: str) -> list[str]:
    """A driver process running the sweep that the test kills."""
    code = ("from helpers_sweeps import tiny_vgg, tiny_images; from common.ray_runner import Resources; "
            "from sweeps.distributed import distributed_sweep; from sweeps.settings import SweepSettings; "
            f"distributed_sweep(tiny_vgg(), tiny_images(counts={KILL_TEST_COUNTS!r}), {str(out)!r}, "
            f"{KILL_TEST_SETTINGS!r}, address={address!r}, progress=False)")
    return [sys.executable, "-c", code]


def test_killed_driver_resumes_to_the_same_table(ray_address, tmp_path):
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    driver = subprocess.Popen(sweep_script(killed, ray_address), cwd=TESTS)
    chunks = killed / "chunks" / "oneshot"
    deadline = time.time() + 120
    while len(list(chunks.glob("*.parquet"))) < 3 and driver.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    before = {p.name: p.stat().st_mtime_ns for p in chunks.glob("*.parquet")}
    assert 3 <= len(before) < 132 and not (killed / "filter_losses.parquet").exists()

    subprocess.run(sweep_script(killed, ray_address), cwd=TESTS, check=True, timeout=300)
    after = {p.name: p.stat().st_mtime_ns for p in chunks.glob("*.parquet")}
    assert all(after[name] == mtime for name, mtime in before.items())  # finished chunks were not redone
    uninterrupted = distributed_sweep(tiny_vgg(), tiny_images(counts=KILL_TEST_COUNTS), clean,
                                      KILL_TEST_SETTINGS, progress=False)
    pd.testing.assert_frame_equal(pd.read_parquet(killed / "filter_losses.parquet"), uninterrupted[0])
    pd.testing.assert_frame_equal(pd.read_parquet(killed / "ranking.parquet"), uninterrupted[1])


def test_sweep_completes_when_a_worker_dies_mid_task(ray_address, tmp_path):
    model, data = tiny_vgg(seed=2), tiny_images(seed=3, counts={"a": 40, "b": 40})
    settings = SweepSettings(layers=("conv1_1", "conv3_1", "conv5_3"), filters_per_task=4, lesions_per_pass=1,
                             batch_size=8, resources=Resources(max_retries=3))
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
