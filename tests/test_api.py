"""The Python API: `specialize.api` exports the functions behind the commands, and docs/API.md's worked example runs
as written (train a tiny pair, sweep, segregate, read the tables)."""

from __future__ import annotations

import contextlib
import io
import re
import runpy

import pytest
from helpers_train import ROOT

from specialize import api

DOC = ROOT / "docs" / "API.md"


def example_code() -> str:
    """The one Python block of docs/API.md."""
    [code] = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
    return code


def test_api_exports_the_functions_behind_the_commands():
    for name in ("train", "run_sweep", "run_segregation", "run_decoding", "run_rsa", "load_model", "build_dataset"):
        assert name in api.__all__ and callable(getattr(api, name)) and getattr(api, name).__doc__
    assert all(hasattr(api, name) for name in api.__all__)
    for name in api.__all__:  # the table of docs/API.md names every function
        if callable(getattr(api, name)) and name[0].islower():
            assert f"`{name}" in DOC.read_text(), name


@pytest.mark.slow
def test_worked_example_runs_as_documented(tmp_path, monkeypatch):
    (tmp_path / "example.py").write_text(example_code())
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    monkeypatch.chdir(tmp_path)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        runpy.run_path(str(tmp_path / "example.py"), run_name="__main__")
    out = printed.getvalue()
    assert "('face', 'object')" in out
    root = tmp_path / "api-example"
    for path in ("runs/tiny_face_object/manifest.json", "lesion/manifest.json", "segregation/manifest.json"):
        assert (root / path).is_file(), path
    assert "conv5_3" in out and "face+object" in out  # the tables were read and printed
