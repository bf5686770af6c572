"""--ray-dashboard: every Ray command offers it; it starts the local Ray with Ray's dashboard (served on 127.0.0.1,
its address printed) where Ray's dashboard packages are installed, and says in one line what to install where they
are not (make does not install them: specialize's extra [dashboard]); with --address it is refused in one line.
cluster/launch.sh --ray-dashboard is in tests/test_cluster_launch.py."""

from __future__ import annotations

import re
import urllib.request

import pytest
import ray
from ray._private.utils import get_dashboard_dependency_error

from common.ray_runner import ray_session
from specialize.cli import main

pytestmark = pytest.mark.ray  # starts Ray through the command line


RAY_COMMANDS = ("lesion", "segregation", "activations", "decode", "rsa", "study", "tune")
LESION = ["lesion", "--checkpoint", "missing.ckpt", "--data", "missing", "--ray-dashboard"]


@pytest.mark.parametrize("command", RAY_COMMANDS)
def test_every_ray_command_offers_the_dashboard(command, capsys):
    assert main([command, "--help"]) == 0
    assert "--ray-dashboard" in capsys.readouterr().out


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    return err


def test_the_dashboard_of_a_cluster_joined_with_address_is_the_clusters(tmp_path, capsys):
    assert main([*LESION, "--out", str(tmp_path / "out"), "--address", "127.0.0.1:1"]) == 2
    assert "--address joins a cluster, which runs its own (cluster/launch.sh --ray-dashboard" in one_line_error(capsys)
    assert not (tmp_path / "out").exists()


def test_the_dashboard_starts_with_the_local_ray_or_one_line_says_what_to_install(tmp_path, capsys):
    if get_dashboard_dependency_error() is not None:  # this environment, as make installs it
        assert main([*LESION, "--out", str(tmp_path / "out")]) == 2
        assert f"pip install 'ray[default]=={ray.__version__}'" in one_line_error(capsys)
        assert not ray.is_initialized() and not (tmp_path / "out").exists()
        return
    with ray_session(None, dashboard=True):  # an environment with specialize[dashboard]
        [url] = re.findall(r"Ray dashboard: (http://127\.0\.0\.1:\d+) ", capsys.readouterr().err)
        with urllib.request.urlopen(url, timeout=30) as page:
            assert page.status == 200
    assert not ray.is_initialized()
