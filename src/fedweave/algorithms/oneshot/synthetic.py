"""The synthetic set on disk: one safetensors file per finished batch (uint8 images, int64
labels), written atomically, so a killed synthesis keeps every batch it finished; the whole
set as ``synthetic.safetensors``; the image grid ``plots/synthetic.png``. Nothing here is a
pickle: safetensors and json only."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from fedweave.records.rundir import atomic_write


def to_uint8(x: torch.Tensor, mean: tuple[float, ...] | None, std: tuple[float, ...] | None
             ) -> torch.Tensor:
    """Normalised images ``[..., C, H, W]`` → uint8 pixels (the inverse of
    ``data.sources.to_float``, clipped to [0, 255] and rounded)."""
    x = x.detach().float()
    if mean is not None and std is not None:
        m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
        s = torch.tensor(std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
        x = x * s + m
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def batch_path(folder: Path, batch: int) -> Path:
    return folder / f"batch-{batch:06d}.safetensors"


def write_batch(path: Path, images: torch.Tensor, labels: torch.Tensor,
                info: dict[str, float | list[int]]) -> None:
    """One finished batch, atomically (temporary file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({"images": images.cpu().contiguous(), "labels": labels.cpu().contiguous()},
              str(tmp), metadata={"info": json.dumps(info)})
    tmp.replace(path)


def read_batch(path: Path) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(images, labels) of a finished batch, or None when the file is absent or damaged."""
    if not path.is_file():
        return None
    try:
        t = load_file(str(path))
    except (SafetensorError, OSError, ValueError):
        return None
    if set(t) != {"images", "labels"} or t["images"].dtype != torch.uint8:
        return None
    return t["images"], t["labels"]


def write_set(path: Path, images: torch.Tensor, labels: torch.Tensor,
              info: dict[str, object]) -> None:
    """The whole synthetic set: ``images`` uint8 ``[M, C, H, W]``, ``labels`` int64 ``[M]``."""
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({"images": images.cpu().contiguous(), "labels": labels.cpu().contiguous()},
              str(tmp), metadata={"info": json.dumps(info)})
    tmp.replace(path)


def plot_synthetic(path: Path, synthetic: tuple[torch.Tensor, torch.Tensor],
                   real: tuple[torch.Tensor, torch.Tensor], classes: int, per_class: int = 8,
                   names: list[str] | None = None) -> Path:
    """A grid: one row per class, ``per_class`` synthesised images, then as many real ones."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 2 * per_class + 1
    fig, axes = plt.subplots(classes, cols, figsize=(cols * 0.7, classes * 0.75 + 0.4),
                             squeeze=False)
    for c in range(classes):
        for j, (images, labels) in enumerate((synthetic, real)):
            picked = images[labels.cpu() == c][:per_class].cpu()
            for k in range(per_class):
                ax = axes[c][k + j * (per_class + 1)]
                if k < len(picked):
                    img = picked[k].permute(1, 2, 0).numpy()
                    ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray",
                              vmin=0, vmax=255)
        axes[c][0].set_ylabel(names[c] if names else str(c), rotation=0, ha="right",
                              fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.spines[:].set_visible(False)
    axes[0][per_class // 2].set_title("synthesised", fontsize=8)
    axes[0][per_class + 1 + per_class // 2].set_title("real (test set)", fontsize=8)
    fig.tight_layout(pad=0.2)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_index(folder: Path, entries: dict[str, object]) -> None:
    """``index.json`` of a batch folder (what was made, what was reused)."""
    atomic_write(folder / "index.json", json.dumps(entries, indent=2))
