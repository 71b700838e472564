"""Checkpoints of a run: safetensors + json, verified, with a retention policy.

``checkpoints/round-<r>.safetensors`` holds the flat state (``fedweave.core.state``) after r
completed rounds, ``round-<r>.json`` its metadata (format version, round, the sha256 of the
tensor file, the run's totals, best and history, the engine) with ``meta_sha256``, the sha256
of the rest of that JSON (canonical form), and ``latest.json`` names the newest one.
Writes are atomic (temporary file, fsync, rename), the tensor file first, so a kill at any
moment leaves the previous checkpoint intact; stray temporary or unreferenced files from a
killed write are removed on the next save or load. ``save(..., background=True)`` takes its
snapshot (the tensors serialised, the metadata copied) at once and leaves the writing, the
fsyncs and the retention to a thread, beside the next round; the next ``save`` or ``flush``
waits for it and raises its error, so one write at most is in flight and they land in order.

Loading verifies before it trusts: the file named must lie inside ``checkpoints/``, exist and
match its checksum, and parse; the metadata must match its own checksum (an edited engine,
totals or history is damage) and pass the caller's ``validate`` (the runner checks that the
keys it resumes from are present and well-formed); a damaged latest checkpoint falls back to
the newest good one (the previous one is kept until a newer one is complete), with one
warning line naming the file. Nothing read here executes code (safetensors and json only).

Retention (``output.keep``): ``latest`` keeps the newest (and the one before it, as the
fallback), ``every_k`` also every ``output.keep_every``-th round, ``best`` also the one with
the best validation accuracy so far, ``all`` keeps every checkpoint (influence scoring over
training checkpoints needs several).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as serialise

from fedweave.errors import UserError

FORMAT = 3
#: formats this version reads: 2 had no ``meta_sha256`` (its metadata is only validated)
READABLE = (2, 3)
log = logging.getLogger("fedweave")
_NAME = re.compile(r"^round-(\d{6,})\.json$")


def _fsync_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def meta_digest(body: dict[str, Any]) -> str:
    """sha256 of a checkpoint's JSON without its ``meta_sha256`` key (sorted keys, compact;
    floats as JSON writes them, which round-trips exactly)."""
    rest = {k: v for k, v in body.items() if k != "meta_sha256"}
    text = json.dumps(json.loads(json.dumps(rest)), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class Checkpoints:
    """The ``checkpoints/`` folder of one run (or stage)."""

    def __init__(self, folder: Path, keep: str = "latest", keep_every: int = 1) -> None:
        self.folder, self.keep, self.keep_every = folder, keep, keep_every
        self._pending: threading.Thread | None = None
        self._failed: BaseException | None = None

    # ------------------------------------------------------------------ writing
    def save(self, round_done: int, tensors: dict[str, torch.Tensor], meta: dict[str, Any],
             score: float | None = None, background: bool = False) -> Path:
        """Write the checkpoint after ``round_done`` rounds; ``score`` (validation accuracy)
        ranks checkpoints for ``keep: best``. ``background``: return once the snapshot is
        taken and write on a thread (module docstring)."""
        self.flush()
        self.folder.mkdir(parents=True, exist_ok=True)
        blob = serialise({k: v.detach().contiguous().cpu() for k, v in tensors.items()})
        snapshot = json.loads(json.dumps(meta))
        data = self.folder / f"round-{round_done:06d}.safetensors"
        if not background:
            self._write(round_done, blob, snapshot, score)
            return data

        def write() -> None:
            try:
                self._write(round_done, blob, snapshot, score)
            except BaseException as exc:  # raised by the next save or flush
                self._failed = exc

        self._pending = threading.Thread(target=write, name="fedweave-checkpoint", daemon=True)
        self._pending.start()
        return data

    def flush(self) -> None:
        """Wait for a checkpoint being written in the background; raise its error."""
        if self._pending is not None:
            self._pending.join()
            self._pending = None
        failed, self._failed = self._failed, None
        if failed is not None:
            raise failed

    def _write(self, round_done: int, blob: bytes, meta: dict[str, Any],
               score: float | None) -> None:
        stem = f"round-{round_done:06d}"
        data = self.folder / f"{stem}.safetensors"
        _fsync_write(data, blob)
        entry = {"format": FORMAT, "round": round_done, "file": data.name,
                 "sha256": hashlib.sha256(blob).hexdigest(), "score": score}
        body = {**entry, **meta}
        body["meta_sha256"] = meta_digest(body)
        _fsync_write(self.folder / f"{stem}.json", json.dumps(body, indent=2).encode())
        _fsync_write(self.folder / "latest.json", json.dumps(entry, indent=2).encode())
        self._retain(round_done)

    def _entries(self) -> list[dict[str, Any]]:
        """Metadata of every checkpoint that has one, newest first (unreadable ones skipped)."""
        out = []
        for path in self.folder.glob("round-*.json"):
            if not _NAME.match(path.name):
                continue
            try:
                entry = json.loads(path.read_text())
                int(entry["round"])
            except (OSError, ValueError, KeyError, TypeError):
                continue
            out.append(entry)
        return sorted(out, key=lambda e: -int(e["round"]))

    def _retain(self, newest: int) -> None:
        entries = self._entries()
        keep = {newest}
        older = [int(e["round"]) for e in entries if int(e["round"]) < newest]
        if older:
            keep.add(max(older))  # the fallback while the newest is the only copy
        if self.keep == "all":
            return self._sweep(None)
        if self.keep == "every_k":
            keep |= {int(e["round"]) for e in entries if int(e["round"]) % self.keep_every == 0}
        if self.keep == "best":
            scored = [e for e in entries if e.get("score") is not None]
            if scored:
                best = max(scored, key=lambda e: (float(e["score"]), -int(e["round"])))
                keep.add(int(best["round"]))
        for e in entries:
            if int(e["round"]) not in keep:
                stem = f"round-{int(e['round']):06d}"
                for suffix in (".safetensors", ".json"):
                    with contextlib.suppress(FileNotFoundError):
                        (self.folder / f"{stem}{suffix}").unlink()
        self._sweep(keep)
        return None

    def _sweep(self, keep: set[int] | None) -> None:
        """Remove temporary files and tensor files without metadata (a killed save)."""
        known = {f"round-{int(e['round']):06d}.safetensors" for e in self._entries()}
        for path in self.folder.iterdir():
            stray = path.name.endswith(".tmp") or (
                path.suffix == ".safetensors" and path.name not in known)
            if stray:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()

    # ------------------------------------------------------------------ reading
    def _read(self, entry: dict[str, Any]) -> dict[str, torch.Tensor]:
        name = str(entry.get("file", ""))
        path = (self.folder / name).resolve()
        if path.parent != self.folder.resolve() or not name.endswith(".safetensors"):
            raise ValueError(f"names {name!r}, outside {self.folder}")
        if not path.is_file():
            raise ValueError(f"{path.name} is missing")
        if entry.get("sha256") != sha256(path):
            raise ValueError(f"{path.name} does not match its checksum (damaged)")
        if entry.get("format") not in READABLE:
            raise ValueError(f"{path.stem}.json: unknown checkpoint format "
                             f"{entry.get('format')!r}")
        if entry.get("format", FORMAT) >= 3 and entry.get("meta_sha256") != meta_digest(entry):
            raise ValueError(f"{path.stem}.json does not match its checksum (its engine, "
                             "totals or history were edited or damaged)")
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise ValueError(f"{path.name} cannot be read ({exc})") from None

    def rounds(self) -> list[int]:
        """Rounds of the checkpoints on disk, oldest first (not verified)."""
        return sorted(int(e["round"]) for e in self._entries())

    def load_round(self, round_done: int) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """A specific checkpoint, verified; ``UserError`` when it is absent or damaged."""
        for entry in self._entries():
            if int(entry["round"]) == round_done:
                try:
                    return self._read(entry), entry
                except ValueError as exc:
                    raise UserError(f"checkpoint of round {round_done} in {self.folder}: "
                                    f"{exc}") from None
        raise UserError(f"no checkpoint of round {round_done} in {self.folder} (kept: "
                        f"{self.rounds() or 'none'}; output.keep decides which are kept)")

    def load(self, validate: Callable[[int, dict[str, Any]], None] | None = None
             ) -> tuple[int, dict[str, torch.Tensor], dict[str, Any]] | None:
        """The newest good checkpoint: (round, tensors, metadata), or None if there is none.
        ``validate(round, metadata)`` raises ``ValueError`` for metadata the caller cannot
        resume from. Damaged ones are skipped with a warning; if every one is damaged,
        ``UserError``."""
        if not self.folder.is_dir():
            return None
        problems: list[str] = []
        latest = self.folder / "latest.json"
        candidates = self._entries()
        if latest.is_file():
            try:
                head = json.loads(latest.read_text())
                if int(head.get("format", 1)) not in READABLE:
                    raise UserError(
                        f"{latest}: checkpoint format {head.get('format', 1)} was written by "
                        f"another fedweave version (this one reads format {FORMAT}); resume it "
                        "with the version that wrote it, or start a new run")
                candidates = [e for e in candidates if int(e["round"]) == int(head["round"])] \
                    + [e for e in candidates if int(e["round"]) != int(head["round"])]
            except (ValueError, KeyError, TypeError, OSError):
                problems.append("latest.json is damaged")
        for entry in candidates:
            meta = {k: v for k, v in entry.items()
                    if k not in ("format", "round", "file", "sha256", "score", "meta_sha256")}
            try:
                tensors = self._read(entry)
                if validate is not None:
                    try:
                        validate(int(entry["round"]), meta)
                    except (ValueError, KeyError, TypeError) as exc:
                        raise ValueError(f"round-{int(entry['round']):06d}.json: {exc}"
                                         ) from None
            except ValueError as exc:
                problems.append(f"round {entry['round']}: {exc}")
                continue
            if problems:
                log.warning("checkpoint: %s; resuming from round %s instead",
                            "; ".join(problems), entry["round"])
            return int(entry["round"]), tensors, meta
        if problems:
            raise UserError(f"every checkpoint in {self.folder} is damaged ({'; '.join(problems)}"
                            "); start a new run, or resume from a copy")
        return None
