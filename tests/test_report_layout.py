"""The report reads at a glance: metrics before config columns (no scrolling at 1400 px for
them), single-point runs drawn with a marker, integer round axes, box-plot labels that do not
overlap, asynchronous server updates named as such; the live progress bar keeps its round
counter on an 80-column terminal."""

from __future__ import annotations

import io
import itertools
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from rich.console import Console

from fedweave.cli.progress import TerminalProgress
from fedweave.records import plots
from fedweave.records.report import write_report
from fedweave.runner import run
from tests.conftest import small_config

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _series(rounds: list[int]) -> plots.Series:
    rows = [{"round": str(r), "node": "global", "split": "test", "metric": "acc",
             "value": str(0.1 * r), "sim_time": str(r), "wall_time": "0"} for r in rounds]
    return plots.series(rows)


def test_single_point_runs_get_a_marker_and_round_ticks_are_integers() -> None:
    fig = plots.curve_figure({"one": [_series([1])], "four": [_series([1, 2, 3, 4])]}, "acc",
                             splits=("test",), rounds="server update")
    assert fig is not None
    ax = fig.axes[0]
    lines = {len(line.get_xdata()): line for line in ax.get_lines()}
    assert lines[1].get_marker() == "o" and lines[4].get_marker() in ("None", None, "")
    fig.canvas.draw()
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks)
    assert ax.get_xlabel() == "server update"
    plots.close(fig)
    assert plots.round_label(["async"]) == "server update"
    assert plots.round_label(["federated", "async"]) == "round / server update"
    assert plots.round_label(["decentralized"]) == "epoch"


def test_box_plot_labels_do_not_overlap() -> None:
    names = [f"lr=0.{i} alpha=0.5 · lr-0.{i}_alpha-0.5_seed{i}" for i in range(6)]
    fig = plots.distribution_figure({n: [0.1, 0.5, 0.9] for n in names}, "accuracy")
    assert fig is not None
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    boxes = [t.get_window_extent(renderer) for t in fig.axes[0].get_xticklabels()]
    assert len(boxes) == 6
    for a, b in itertools.pairwise(boxes):
        assert not a.overlaps(b)
    plots.close(fig)


def test_report_puts_metrics_first_and_names_server_updates(tmp_path: Path) -> None:
    fed = run(small_config("rounds=1", "name=fed", f"output.dir={tmp_path}"))
    asy = run(small_config("rounds=2", "name=asy", "algorithm.name=fedasync",
                           "engine.name=loop", f"output.dir={tmp_path}"))
    page = write_report([fed.run_dir, asy.run_dir], tmp_path / "rep",  # type: ignore[list-item]
                        formats=("png",))
    html = page.read_text()
    head = html[html.index('<table id="runs">'):html.index("</thead>")]
    cols = re.findall(r"<th[^>]*>([^<]+)</th>", head)
    assert cols.index("final acc") < cols.index("algorithm") < cols.index("algorithm.name")
    assert cols[2:6] == ["final acc", "best (by validation)", "time to target", "rounds"]
    assert "2/2 server updates" in html and "Accuracy vs round / server update" in html


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="apt-get install chromium")
def test_metric_columns_are_visible_at_1400_px_without_scrolling(tmp_path: Path) -> None:
    runs = [run(small_config("rounds=1", f"name=r{i}", f"train.lr=0.0{i + 1}",
                             f"train.weight_decay=0.000{i}", f"train.momentum=0.{i}",
                             f"output.dir={tmp_path}")).run_dir for i in range(2)]
    page = write_report(runs, tmp_path / "rep", formats=("png",))  # type: ignore[arg-type]
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace("</body>", """<script>
var th = Array.prototype.filter.call(document.querySelectorAll('#runs th'),
  function (t) { return t.textContent.trim() === 'wall s'; })[0];
document.title = 'right=' + Math.round(th.getBoundingClientRect().right);
</script></body>"""))
    assert CHROMIUM is not None
    proc = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                           "--window-size=1400,900", "--dump-dom", probe.resolve().as_uri()],
                          capture_output=True, text=True, timeout=120)
    found = re.search(r"<title>right=(\d+)</title>", proc.stdout)
    assert found, proc.stderr[-2000:]
    assert int(found.group(1)) <= 1400   # the metrics end inside the window


def test_live_bar_keeps_the_round_counter_at_80_columns() -> None:
    buf = io.StringIO()
    bar = TerminalProgress(Console(file=buf, force_terminal=True, width=80))
    run(small_config("rounds=12", "output.eval_every=3"), callbacks=[bar], write=False)
    text = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", buf.getvalue())
    frames = [f for f in text.replace("\r", "\n").splitlines() if f.strip()]
    updates = [f for f in frames if "loss" in f]
    assert updates and all(len(f) <= 80 for f in frames)
    shown = [re.match(r"round (\d+)/12 ", f) for f in updates]  # frames at refresh times
    counters = [int(m.group(1)) for m in shown if m is not None]
    assert len(counters) == len(updates) and counters[-1] == 12
    assert set(counters) <= {3, 6, 9, 12} and counters == sorted(counters)


def test_a_fresh_report_process_knows_each_runs_round_unit() -> None:
    """``fedweave report`` in a fresh process registers the built-in algorithms' kinds (the
    records layer imports no algorithm): each run's round unit follows from its name."""
    import os
    import sys

    code = ("import tempfile; from typer.testing import CliRunner; from fedweave.cli import app; "
            "CliRunner().invoke(app, ['report', tempfile.mkdtemp(), '--out', "
            "tempfile.mkdtemp()]); "
            "from fedweave.records.report import round_unit as u; "
            "print([u({'algorithm.name': n}) for n in ('dsgd', 'fedbuff', 'fedavg', 'nope')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")},
                         timeout=120)
    assert out.stdout.strip() == "['epoch', 'server update', 'round', 'round']", out.stderr
