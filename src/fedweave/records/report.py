"""``fedweave report``: overlay the curves of one or more runs and write an HTML page with
their summaries and plots."""

from __future__ import annotations

import html
import json
from pathlib import Path

from fedweave.errors import UserError
from fedweave.records.plots import plot_curves
from fedweave.records.rundir import RunDirectory


def write_report(run_dirs: list[Path], out: Path | None = None) -> Path:
    runs, summaries = {}, {}
    for path in run_dirs:
        rd = RunDirectory.open(path)
        if not (path / "metrics.csv").is_file():
            raise UserError(f"{path}: no metrics.csv (did the run start?)")
        runs[path.name] = rd.read_metrics()
        summary = path / "summary.json"
        summaries[path.name] = json.loads(summary.read_text()) if summary.is_file() else {}
    out = out or (run_dirs[0] / "report" if len(run_dirs) == 1 else Path("report"))
    out.mkdir(parents=True, exist_ok=True)
    images = plot_curves(runs, out)
    rows = []
    for name, s in summaries.items():
        f = s.get("final", {})
        rows.append(
            f"<tr><td>{html.escape(name)}</td><td>{s.get('algorithm', '')}</td>"
            f"<td>{f.get('test_acc', float('nan')):.4f}</td>"
            f"<td>{f.get('test_loss', float('nan')):.4f}</td>"
            f"<td>{s.get('best', {}).get('test_acc', float('nan')):.4f}</td>"
            f"<td>{s.get('wall_s', float('nan')):.1f}</td>"
            f"<td>{s.get('sim_time_s', 0):.1f}</td><td>{s.get('bytes_up', 0):,}</td></tr>")
    page = out / "index.html"
    page.write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>fedweave report</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:4px 10px;"
        "border-bottom:1px solid #ddd}</style></head><body><h1>fedweave report</h1>"
        "<table><tr><th>run</th><th>algorithm</th><th>final test acc</th><th>test loss</th>"
        "<th>best test acc</th><th>wall s</th><th>sim s</th><th>bytes up</th></tr>"
        + "".join(rows) + "</table>"
        + "".join(f"<p><img src='{p.name}' width='900'></p>" for p in images)
        + "</body></html>")
    return page
