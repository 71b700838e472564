"""Nothing read from disk runs code: a config's ``plugins:`` list (a run directory's
config.yaml above all) is imported only when the user names the plugins (``--import`` or
``fedweave --trust-plugins``); children (``--procs``, ``sweep --jobs``) and ``--import`` never
put the working directory on ``sys.path``. Each payload writes a marker file when it runs:
the marker must never appear."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from trust_cli import FAST, assert_one_line_error, cli_env, fedweave, run_dirs

PAYLOAD = "from pathlib import Path\nPath({marker!r}).write_text('ran')\n"


def plant(folder: Path, name: str, marker: Path) -> Path:
    path = folder / name
    path.write_text(PAYLOAD.format(marker=str(marker)))
    return path


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("code")
    proc = fedweave("run", *FAST, "--set", "data.nodes=3", "--set", "output.keep=all",
                    "--out", str(base / "runs"), cwd=base)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (run_dir,) = run_dirs(base / "runs")
    return run_dir


def planted_run(finished: Path, tmp_path: Path, relative: bool) -> tuple[Path, Path]:
    """A copy of the run whose config.yaml lists a plugin that writes the marker: by absolute
    path, or as ``helpers.py`` beside config.yaml (for commands run from inside it)."""
    run_dir = Path(shutil.copytree(finished, tmp_path / "shared-run"))
    marker = tmp_path / "MARKER"
    helper = plant(run_dir, "helpers.py", marker)
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    config["plugins"] = ["helpers.py" if relative else str(helper)]
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    return run_dir, marker


COMMANDS = {
    "resume": lambda d, o: ["run", "--resume", str(d), "--set", "rounds=2"],
    "export": lambda d, o: ["export", str(d), "--out", str(o / "model.safetensors")],
    "influence": lambda d, o: ["influence", str(d), "--scorer", "random", "--out", str(o)],
    "prune_stage1": lambda d, o: ["prune", "--stage1", str(d), "--scorer", "random",
                                  "--out", str(o)],
    "config_show": lambda d, o: ["config", "show", str(d / "config.yaml")],
    "data_show": lambda d, o: ["data", "show", str(d / "config.yaml"), "--out",
                               str(o / "p.png")],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("relative", [
    False, pytest.param(True, marks=pytest.mark.slow)], ids=["absolute", "from-inside"])
def test_a_run_directory_never_imports_its_plugins(finished: Path, tmp_path: Path,
                                                   command: str, relative: bool) -> None:
    run_dir, marker = planted_run(finished, tmp_path, relative)
    out = tmp_path / "out"
    out.mkdir()
    proc = fedweave(*COMMANDS[command](run_dir, out), cwd=run_dir if relative else tmp_path)
    assert_one_line_error(proc, "lists plugins", "helpers.py", "--import", "--trust-plugins")
    assert not marker.exists()


@pytest.mark.slow
def test_named_plugins_run_and_trust_plugins_says_what_it_imports(finished: Path,
                                                                  tmp_path: Path) -> None:
    """The rule refuses what nobody named, not plugins: named, they run (so a run that needs
    one resumes as before)."""
    run_dir, marker = planted_run(finished, tmp_path, relative=True)
    proc = fedweave("config", "show", "config.yaml", "--import", "helpers.py", cwd=run_dir)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert marker.read_text() == "ran"
    marker.unlink()
    proc = fedweave("--trust-plugins", "config", "show", "config.yaml", cwd=run_dir)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "--trust-plugins: importing helpers.py" in proc.stderr
    assert marker.read_text() == "ran"


def test_a_user_config_listing_plugins_needs_them_named(tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"
    plant(tmp_path, "evil.py", marker)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"plugins": ["evil"], "rounds": 1}))
    proc = fedweave("run", "c.yaml", *FAST, "--out", "runs", cwd=tmp_path)
    assert_one_line_error(proc, "lists plugins evil", "--import evil")
    proc = fedweave("sweep", "c.yaml", "--grid", "seed=1,2", *FAST, "--out", "sw",
                    cwd=tmp_path)
    assert_one_line_error(proc, "lists plugins evil")
    assert not marker.exists()


@pytest.mark.slow
def test_children_never_import_from_the_working_directory(tmp_path: Path) -> None:
    """A yaml.py in the folder where ``run --procs 2`` and ``sweep --jobs 2`` start."""
    marker = tmp_path / "MARKER"
    plant(tmp_path, "yaml.py", marker)
    (tmp_path / "c.yaml").write_text("rounds: 1\ndata:\n  nodes: 2\n")
    proc = fedweave("run", "c.yaml", *FAST, "--procs", "2", "--out", "runs", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc = fedweave("sweep", "c.yaml", "--grid", "seed=1,2", "--jobs", "2", *FAST, "--out",
                    "sw", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(run_dirs(tmp_path / "sw")) == 3  # two points and logs/
    assert not marker.exists()


@pytest.mark.slow
def test_import_from_the_working_directory_imports_that_module_only(tmp_path: Path) -> None:
    """``--import mine`` finds mine.py in the folder; a matplotlib.py beside it stays out
    (the run draws its plots with the real matplotlib)."""
    marker = tmp_path / "MARKER"
    plant(tmp_path, "matplotlib.py", marker)
    (tmp_path / "mine.py").write_text(f"from pathlib import Path\n"
                                      f"Path({str(tmp_path / 'MINE')!r}).write_text('ok')\n")
    proc = fedweave("run", *FAST, "--set", "output.plots=true", "--import", "mine", "--out",
                    "runs", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "MINE").read_text() == "ok"
    (run_dir,) = run_dirs(tmp_path / "runs")
    assert any((run_dir / "plots").glob("*.png"))
    assert not marker.exists()


def test_the_entry_point_for_python_without_dash_p_drops_the_working_directory(
        tmp_path: Path) -> None:
    """Python 3.10 has no ``-P``: children start with an entry point that drops the folder
    from ``sys.path`` first. The same command without that step imports the planted yaml.py
    (the control), with it the real one."""
    from fedweave.distributed.spawn import _SAFE_MAIN

    marker = tmp_path / "MARKER"
    plant(tmp_path, "yaml.py", marker)
    (tmp_path / "c.yaml").write_text("rounds: 1\n")

    def show(code: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", code, "config", "show", "c.yaml"],
                              cwd=tmp_path, env=cli_env(), capture_output=True, text=True,
                              timeout=120)

    proc = show(_SAFE_MAIN)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not marker.exists()
    show(_SAFE_MAIN.replace("del sys.path[0]; ", ""))
    assert marker.exists()  # the control: the payload does run when the folder is on the path
