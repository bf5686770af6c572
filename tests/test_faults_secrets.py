"""Secrets never land in what the project writes: `common.redact` finds them by environment-variable name and by
value, in text, nested data and command lines; manifests, config dumps and one-line errors go through it. The
end-to-end check (a fake WANDB_API_KEY in the environment and on the command line appears in no file that train,
lesion and segregation write, W&B's offline runs included) is in test_faults_ray.py, beside the Ray fixtures."""

from __future__ import annotations

import json
import sys

from helpers_train import ROOT

from common.io import as_stored, write_json
from common.manifest import build_manifest
from common.redact import REDACTED, redact, redact_argv, redact_text, secret_values
from lightning_modules.config import load_config, write_config
from specialize.cli import main

KEY = "fake0123456789abcdef0123456789abcdef01"  # the shape of a W&B API key


def test_secret_values_are_those_of_secret_looking_variables():
    environ = {
        "WANDB_API_KEY": KEY,
        "AWS_SECRET_ACCESS_KEY": "aws/secret/value",
        "GITHUB_TOKEN": "ghp_token_value",
        "DB_PASSWORD": "hunter2hunter2",
        "SHORT_KEY": "1234",
        "HOME": "/home/someone",
        "PATH": "/usr/bin",
    }
    assert set(secret_values(environ)) == {KEY, "aws/secret/value", "ghp_token_value", "hunter2hunter2"}


def test_redact_replaces_secret_values_anywhere_but_leaves_data_keys(monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", KEY)
    data = {"wandb": {"tags": [f"run-{KEY}"], "group": KEY}, "per_class": {"keyboard": 12}, "note": ("a", KEY)}
    assert redact(data) == {
        "wandb": {"tags": [f"run-{REDACTED}"], "group": REDACTED},
        "per_class": {"keyboard": 12},
        "note": ("a", REDACTED),
    }
    assert redact_text(f"token {KEY}.") == f"token {REDACTED}."
    assert as_stored({"path": ROOT / KEY}) == {"path": str(ROOT / REDACTED)}


def test_redact_argv_hides_secret_options_and_values(monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", KEY)
    argv = [
        "specialize",
        "train",
        "--api-key",
        "abcdefgh",
        "--token=xyz",
        "WANDB_API_KEY=plain",
        f"wandb.group={KEY}",
        "trainer.epochs=3",
        "--config",
        "c.yaml",
    ]
    assert redact_argv(argv) == [
        "specialize",
        "train",
        "--api-key",
        REDACTED,
        f"--token={REDACTED}",
        f"WANDB_API_KEY={REDACTED}",
        f"wandb.group={REDACTED}",
        "trainer.epochs=3",
        "--config",
        "c.yaml",
    ]


def test_manifests_config_dumps_and_errors_are_redacted(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("WANDB_API_KEY", KEY)
    monkeypatch.setattr(sys, "argv", ["specialize", "train", f"wandb.group={KEY}", "--secret-token", "s3cr3t-s3cr3t"])
    write_json(tmp_path / "manifest.json", build_manifest("test", note=KEY))
    write_config(load_config(ROOT / "configs" / "tiny_face.yaml", [f"wandb.group={KEY}"]), tmp_path)
    for name in ("manifest.json", "config.yaml"):
        text = (tmp_path / name).read_text()
        assert KEY not in text and "s3cr3t-s3cr3t" not in text and REDACTED in text
    assert json.loads((tmp_path / "manifest.json").read_text())["command"].endswith(f"--secret-token {REDACTED}")
    assert main(["train", "--config", str(ROOT / "configs" / "tiny_face.yaml"), f"wandb.mode={KEY}"]) == 2
    error = capsys.readouterr().err
    assert KEY not in error and f"'{REDACTED}'" in error
