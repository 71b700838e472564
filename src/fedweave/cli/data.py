"""``fedweave data list|show|download|trace``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from fedweave.cli.common import SetOpt, app, console, fail
from fedweave.cli.outputs import image_suffixes, output_file, output_folder
from fedweave.errors import UserError

data_app = typer.Typer(help="Datasets: list, show a partition, download; device traces.")
app.add_typer(data_app, name="data")

@data_app.command("list")
def data_list(root: Annotated[Path | None, typer.Option("--root")] = None) -> None:
    """Datasets, whether they are present, and where."""
    from fedweave.data.sources import DATASETS, dataset_status

    table = Table(title="datasets")
    table.add_column("name")
    table.add_column("present")
    table.add_column("path")
    for name in DATASETS.names():
        present, path = dataset_status(name, root)
        table.add_row(name, "yes" if present else "no", str(path))
    Console().print(table)


@data_app.command("download")
def data_download(name: str, root: Annotated[Path | None, typer.Option("--root")] = None
                  ) -> None:
    """Download a dataset (checksum-verified) into the data root; femnist, shakespeare and
    celeba: LEAF's raw sources into <root>/<name>/raw/, then the LEAF command to run."""
    from fedweave.data.download import LEAF_RAW, download_dataset, leaf_next_step
    from fedweave.data.sources import default_root

    try:
        folder = output_folder(root or default_root(), "--root")
        path = download_dataset(name, folder)
    except UserError as exc:
        fail(str(exc), 2)
        return
    console.print(f"{name} → {path}", markup=False, highlight=False)
    if name in LEAF_RAW:
        console.print(leaf_next_step(name, folder), markup=False, highlight=False,
                      soft_wrap=True)


@data_app.command("show")
def data_show(
    config: Annotated[Path | None, typer.Argument(help="config whose data section to use")] = None,
    set_: SetOpt = None,
    out: Annotated[Path, typer.Option("--out", help="heatmap PNG")] = Path("partition.png"),
) -> None:
    """Per-node class counts of a partition (table + heatmap) and size statistics."""
    from fedweave.data.federated import build_federated_data
    from fedweave.plugins import load_config
    from fedweave.records.plots import plot_partition

    try:
        output_file(out, "--out", image_suffixes())
        cfg = load_config(config, list(set_ or []))
        data = build_federated_data(cfg.data, cfg.seed)
    except UserError as exc:
        fail(str(exc), 2)
        return
    counts = data.label_counts()
    table = Table(title=f"{cfg.data.dataset}: {cfg.data.partition} over {cfg.data.nodes} nodes")
    table.add_column("node")
    for c in range(counts.shape[1]):
        table.add_column(str(c), justify="right")
    table.add_column("total", justify="right")
    table.add_column("val", justify="right")
    for i, row in enumerate(counts.tolist()):
        table.add_row(str(i), *map(str, row), str(sum(row)), str(len(data.val_idx[i])))
    Console().print(table)
    sizes = counts.sum(1).double()
    console.print(f"samples per node: min {int(sizes.min())}  mean {sizes.mean():.1f}  "
                  f"max {int(sizes.max())}  std {sizes.std():.1f}; test set {len(data.test_y)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    plot_partition(counts, out)
    console.print(f"heatmap → {out}")


@data_app.command("trace")
def data_trace(
    out: Annotated[Path, typer.Argument(help="the device trace to write (JSON)")],
    capacity: Annotated[Path | None, typer.Option(
        "--fedscale", help="FedScale's client_device_capacity (pickle or JSON export)")] = None,
    behave: Annotated[Path | None, typer.Option(
        "--behave", help="FedScale's client_behave_trace (availability windows)")] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1,
                                              help="keep the first N devices")] = None,
    devices: Annotated[int, typer.Option("--devices", min=1, max=1_000_000,
                                         help="devices of the seeded example")] = 300,
    seed: Annotated[int, typer.Option("--seed", help="seed of the example")] = 0,
) -> None:
    """Write a device trace for clock.trace: FedScale's published traces converted
    (--fedscale CAPACITY [--behave BEHAVE]; their pickles are read as plain data only), or the
    seeded example of --devices devices."""
    from fedweave.sim.traces import convert_fedscale, example_trace, write_trace

    try:
        output_file(out, "OUT", (".json",))
        if capacity is None and behave is not None:
            raise UserError("--behave needs --fedscale CAPACITY (the devices it belongs to)")
        trace = convert_fedscale(capacity, behave, limit) if capacity is not None else \
            example_trace(devices, seed)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_trace(trace, out)
    except UserError as exc:
        fail(str(exc), 2)
        return
    console.print(f"{len(trace.devices)} devices → {out}")
