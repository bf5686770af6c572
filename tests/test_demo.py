"""`specialize demo` end to end at a tiny size: every stage runs and leaves its results; a rerun resumes."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from helpers_report import open_in_browser
from lightning_modules.layer_names import CONV_LAYERS
from specialize.cli import main


@pytest.mark.slow
def test_demo_runs_every_stage_and_resumes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["demo", "--out", str(tmp_path), "--classes", "3", "--train-per-class", "12", "--test-per-class", "6",
            "--epochs", "1", "--images-per-task", "12", "--bootstraps", "50"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert f"report: {tmp_path / 'report.html'}" in printed
    shown = open_in_browser(tmp_path / "report.html", tmp_path / "report.png")  # the real demo's page renders
    assert {"Training", "Intact accuracy", "Lesion sweep", "Segregation", "Drop heatmap"} <= set(shown["headings"])
    assert shown["images"] and all(complete and width > 0 and in_full for complete, width, in_full in shown["images"])
    assert shown["requests"] == [(tmp_path / "report.html").resolve().as_uri()]
    for name in ("tiny_face", "tiny_object", "tiny_face_object"):
        assert name in printed
        assert (tmp_path / "train" / name / "checkpoints" / "last.ckpt").is_file()
    ranking = pd.read_parquet(tmp_path / "lesion" / "ranking.parquet")
    assert set(ranking["layer"]) == set(CONV_LAYERS) and set(ranking["task"]) == {"face", "object"}
    summary = json.loads((tmp_path / "segregation" / "summary.json").read_text())
    rows = summary["segregation_index"]["all_outputs"]["face+object"]
    assert [row["layer"] for row in rows] == list(CONV_LAYERS)
    assert all(row["low"] <= row["si"] <= row["high"] for row in rows)
    assert (tmp_path / "segregation" / "figures" / "segregation_by_layer.png").stat().st_size > 0
    chunks = {path: path.stat().st_mtime_ns for path in (tmp_path / "lesion" / "chunks").rglob("*.parquet")}
    losses = pd.read_parquet(tmp_path / "lesion" / "filter_losses.parquet")
    assert main(args) == 0  # resumes: no chunk of the sweep is computed again, and the results are the same
    assert chunks and {path: path.stat().st_mtime_ns for path in chunks} == chunks
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "lesion" / "filter_losses.parquet"), losses)
