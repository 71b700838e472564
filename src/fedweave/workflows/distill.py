"""``fedweave distill``: one-shot federated learning by data-free distillation (reference
system 003) as one resumable pipeline (``fedweave.workflows.stages``)::

    runs/<name>-<timestamp>/
      config.yaml  pipeline.json  summary.json  synthetic.safetensors  plots/synthetic.png
      teachers/        the local-training run (a full run directory) + teachers.safetensors
      synthesize/      batches/batch-<b>.safetensors, one per finished initial batch
      student/         metrics.csv, checkpoints/, batches/ (its adaptive batches), plots/
      baseline-real/   baseline-noise/   the same student recipe on real data / on noise

Stages: ``teachers`` (one model per client, ``algorithm.name: local`` for ``rounds`` epochs,
each client's best-by-validation round kept) → ``synthesize`` (``initial_batches`` batches of
non-adaptive DeepInversion) → ``student`` (per epoch: new Adaptive DeepInversion batches, then
SGD on the pool; selected by validation accuracy on the clients' validation splits, never on
the test set) → ``baseline-real`` / ``baseline-noise``. A killed pipeline resumes where it
stopped: finished batches are read back, never regenerated, and the student continues from its
last epoch checkpoint, to the same numbers. ``teachers_from`` reuses the teachers of another
distill run whose teacher settings (data, model, train, rounds, seed) are the same.

``distill.synthesis.batches_from: RUN_DIR`` reuses another distill run's initial batches
(reference system 003's ``initial.save_path`` flow: synthesise once, train several student
variants): the synthesize stage copies that run's first ``initial_batches`` batch files
(safetensors, byte for byte) instead of synthesising, after checking that its teachers were
trained with this config's teacher settings; those teachers are reused too unless
``teachers_from`` names others of the same settings. The student then trains exactly as on
batches it had made itself (the adaptive batches of later epochs are made afresh).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fedweave.algorithms.federated.local_only import LocalTraining
from fedweave.algorithms.oneshot.deepinversion import (
    Inversion,
    InversionSettings,
    Teachers,
    batch_noise,
)
from fedweave.algorithms.oneshot.student import Pool, Student
from fedweave.algorithms.oneshot.synthetic import (
    batch_path,
    plot_synthetic,
    read_batch,
    to_uint8,
    write_batch,
    write_index,
    write_set,
)
from fedweave.callbacks import Callback
from fedweave.config import Config
from fedweave.core.state import flatten, unflatten
from fedweave.data.federated import build_federated_data
from fedweave.errors import UserError
from fedweave.memory import require_memory
from fedweave.models import build_model, uses_batchnorm
from fedweave.records.lock import DirectoryLock
from fedweave.records.rundir import RunDirectory, atomic_write
from fedweave.rng import derive_seed
from fedweave.training.select import resolve_device
from fedweave.training.threads import apply_threads, cores
from fedweave.version import __version__
from fedweave.workflows.stages import Pipeline, Stage, StageContext, StageListener, train_stage
from fedweave.workflows.teachers import (
    TEACHERS_FILE,
    copy_teachers,
    evaluate_teachers,
    matching_teachers,
    read_teachers,
    teacher_config,
    teacher_fingerprint,
    write_teachers,
)

Log = Callable[[str], None]


#: float32 copies of an image batch that synthesis or student training hold at least
BATCH_COPIES = 8


@dataclass
class DistillResult:
    run_dir: Path
    summary: dict[str, Any]


class Distillation:
    """The stages of one distill run and what they share (data, teachers, models)."""

    def __init__(self, config: Config, teachers_from: Path | None = None,
                 log: Log | None = None) -> None:
        self.config, self.cfg = config, config.distill
        self.log: Log = log or (lambda _msg: None)
        self.batches_from = config.distill.synthesis.batches_from
        if self.batches_from is not None:
            matching_teachers(Path(self.batches_from), teacher_fingerprint(config),
                              "distill.synthesis.batches_from")
        self.teachers_from = teachers_from if teachers_from is not None else self.batches_from
        if config.launcher.name != "single":
            raise UserError("launcher.name=distributed: fedweave distill runs in one process; "
                            "set launcher.name=single")
        weights = self.cfg.student.class_weights
        # synthesis steps (a batch of images through every teacher) are large: every core;
        # set again by the stages after the teachers' run (which sets its own count)
        self.threads = config.engine.threads or cores()
        apply_threads(self.threads)
        self.device = resolve_device(config.engine.device)
        data = build_federated_data(config.data, config.seed).to(self.device)
        if data.x.dtype != torch.uint8 or data.x.dim() != 4:
            raise UserError(f"fedweave distill synthesises images: data.dataset="
                            f"{config.data.dataset} has no image data; choose an image dataset")
        self.data = data
        self._check_memory()
        if weights is not None and len(weights) != data.num_classes:
            raise UserError(f"distill.student.class_weights has {len(weights)} weights; "
                            f"{config.data.dataset} has {data.num_classes} classes")
        if not uses_batchnorm(self._template()):
            raise UserError(f"fedweave distill matches the teachers' BatchNorm statistics: "
                            f"model.name={config.model.name} with model.norm="
                            f"{config.model.norm} has no BatchNorm layer; set model.norm=batch")
        n_teachers = data.nodes - self.cfg.student_shards
        self.teacher_data = dataclasses.replace(data, train_idx=data.train_idx[:n_teachers],
                                                val_idx=data.val_idx[:n_teachers])
        held = data.train_idx[n_teachers:]
        self.student_real = (torch.cat(held) if held else torch.zeros(0, dtype=torch.int64))
        self.val_idx = data.union_val()
        s = self.cfg.synthesis
        if s.sampling > n_teachers:
            raise UserError(f"distill.synthesis.sampling={s.sampling} exceeds the {n_teachers} "
                            "teachers: lower it")
        self._teachers: Teachers | None = None

    def _check_memory(self) -> None:
        """Refuse up front a synthesis or student batch that cannot fit: a batch of float32
        images is held ``BATCH_COPIES`` times at least (the images, their gradient, two Adam
        moments, the jittered copy, the teachers' first activations)."""
        per_image = math.prod(self.data.input_shape) * 4
        for key, batch in (("distill.synthesis.batch_size", self.cfg.synthesis.batch_size),
                           ("distill.student.batch_size", self.cfg.student.batch_size)):
            require_memory(batch * per_image * BATCH_COPIES,
                           f"{key}={batch} (images of {self.data.input_shape}, "
                           f"{BATCH_COPIES} copies)", f"lower {key}", str(self.device))

    # ------------------------------------------------------------------ shared parts
    def stages(self) -> list[Stage]:
        out = [Stage("teachers", self.stage_teachers), Stage("synthesize", self.stage_synthesize),
               Stage("student", functools.partial(self.stage_student, kind="student"))]
        for kind in self.cfg.baselines:
            out.append(Stage(f"baseline-{kind}",
                             functools.partial(self.stage_student, kind=kind)))
        return out

    def _template(self) -> nn.Module:
        """The teachers' architecture (its own weights are never used)."""
        torch.manual_seed(derive_seed(self.config.seed, "init:template"))
        return build_model(self.config.model, self.data.input_shape,
                           self.data.num_classes).to(self.device)

    def teachers(self, root: Path) -> Teachers:
        """The trained teachers of the run at ``root`` (read once)."""
        if self._teachers is None:
            self._teachers = read_teachers(root / "teachers" / TEACHERS_FILE, self._template(),
                                           self.device)
        return self._teachers

    def settings(self, adaptive: bool) -> InversionSettings:
        s = self.cfg.synthesis
        r = s.resolved()
        return InversionSettings(lr=r["lr"], iterations=int(r["iterations"]), tv=r["tv"],
                                 l2=r["l2"], bn=r["bn"],
                                 competition=r["competition"] if adaptive else 0.0,
                                 temperature=s.temperature,
                                 reversed_kl=s.divergence == "reversed_kl", jitter=s.jitter,
                                 flip=s.flip, sampling=s.sampling)

    def inversion(self, root: Path, adaptive: bool) -> Inversion:
        try:
            return Inversion(self.teachers(root), self.settings(adaptive), self.data.input_shape,
                             self.cfg.synthesis.batch_size, self.config.seed)
        except ValueError as exc:
            raise UserError(f"distill: {exc}") from None

    def make_batches(self, inv: Inversion, folder: Path, ids: list[int],
                     student: nn.Module | None = None, made_before: bool = False
                     ) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], int]:
        """Batches ``ids`` as (uint8 images, labels): read back when finished, otherwise
        synthesised together and written one file each. Returns them and how many were made.
        ``made_before``: they belong to epochs already trained (a resume must find them)."""
        found = [read_batch(batch_path(folder, b)) for b in ids]
        missing = [b for b, f in zip(ids, found, strict=True) if f is None]
        if missing and made_before:
            raise UserError(f"{batch_path(folder, missing[0])} is missing or damaged but the "
                            "student's checkpoint was trained on it; start a new run")
        if missing:
            out = inv.run(missing, student)
            data, teachers = self.data, inv.teachers
            for j, b in enumerate(missing):
                images = to_uint8(out.images[j], data.mean, data.std)
                x = data.features(images)
                probs = teachers.ensemble_probs(x)
                ensemble_acc = float((probs.argmax(1) == out.labels[j]).float().mean())
                info: dict[str, float | list[int]] = {
                    "loss": float(out.loss[j]), "teachers": out.teachers[j],
                    "ensemble_acc": ensemble_acc}
                write_batch(batch_path(folder, b), images, out.labels[j], info)
                found[ids.index(b)] = (images, out.labels[j].cpu())
        done = [f for f in found if f is not None]
        return [(i.to(self.device), y.to(self.device)) for i, y in done], len(missing)

    # ------------------------------------------------------------------ stage: teachers
    def stage_teachers(self, sc: StageContext) -> dict[str, Any]:
        path = sc.dir / TEACHERS_FILE
        fingerprint = teacher_fingerprint(self.config)
        reused = None
        if not path.is_file() and self.teachers_from is not None:
            reused = copy_teachers(Path(self.teachers_from), sc.dir, fingerprint)
        if not path.is_file():
            sc.dir.mkdir(parents=True, exist_ok=True)
            params, buffers = self._train_teachers(sc, teacher_config(self.config))
            write_teachers(path, params, buffers, self.teacher_data.label_counts(), fingerprint)
        teachers = self.teachers(sc.pipeline.root)
        summary = evaluate_teachers(teachers, self.data, self.teacher_data.val_idx)
        if reused is not None:
            summary["reused_from"] = str(reused)
        self.log(f"teachers: test acc {', '.join(f'{a:.3f}' for a in summary['test_acc'])}; "
                 f"ensemble {summary['ensemble']['test_acc']:.3f}")
        return summary

    def _train_teachers(self, sc: StageContext, cfg_t: Config
                        ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Run (or resume) the local-training run; each client's best-by-validation model."""
        if sc.resume and (sc.dir / "summary.json").is_file():  # trained, not yet saved
            ckpt = RunDirectory.open(sc.dir, lock=False).checkpoints.load()
            if ckpt is not None and ckpt[0] == cfg_t.rounds:
                best = unflatten(ckpt[1])["best"]
                return best["params"].to(self.device), {
                    k: v.to(self.device) for k, v in best["buffers"].items()}
        result = train_stage(sc, cfg_t, data=self.teacher_data)
        algo = result.algorithm
        assert isinstance(algo, LocalTraining)
        return algo.best_models()

    # ------------------------------------------------------------------ stage: synthesize
    def reuse_batches(self, sc: StageContext, src: Path) -> dict[str, Any]:
        """Copy the first ``initial_batches`` batch files of the distill run ``src``."""
        import shutil

        total, key = self.cfg.synthesis.initial_batches, "distill.synthesis.batches_from"
        folder, theirs = sc.dir / "batches", src / "synthesize" / "batches"
        folder.mkdir(parents=True, exist_ok=True)
        shape, images_count = tuple(self.data.input_shape), 0
        for b in range(total):
            found = read_batch(batch_path(theirs, b))
            if found is None:
                raise UserError(f"{key} {src}: {batch_path(theirs, b).name} is missing or "
                                f"damaged ({b} of the {total} initial batches are there); lower "
                                "distill.synthesis.initial_batches or finish that run")
            images, labels = found
            images_count += len(labels)
            if tuple(images.shape[1:]) != shape or int(labels.max()) >= self.data.num_classes:
                raise UserError(f"{key} {src}: its images are {tuple(images.shape[1:])} with "
                                f"labels up to {int(labels.max())}; this data set needs "
                                f"{shape} and {self.data.num_classes} classes")
            if read_batch(batch_path(folder, b)) is None:
                tmp = batch_path(folder, b).with_name(f".{batch_path(folder, b).name}.tmp")
                shutil.copyfile(batch_path(theirs, b), tmp)
                tmp.replace(batch_path(folder, b))
            sc.step(b + 1, total, "batches reused")
        index = theirs / "index.json"
        settings = json.loads(index.read_text()).get("settings") if index.is_file() else None
        summary = {"batches": total, "generated": 0, "reused": total,
                   "images": images_count,
                   "reused_from": str(src), "settings": settings}
        write_index(folder, summary)
        return summary

    def stage_synthesize(self, sc: StageContext) -> dict[str, Any]:
        if self.batches_from is not None:
            return self.reuse_batches(sc, Path(self.batches_from))
        apply_threads(self.threads)
        inv = self.inversion(sc.pipeline.root, adaptive=False)
        folder = sc.dir / "batches"
        total = self.cfg.synthesis.initial_batches
        group = inv.teachers.count
        made = 0
        t0 = time.perf_counter()
        for start in range(0, total, group):
            ids = list(range(start, min(total, start + group)))
            _, new = self.make_batches(inv, folder, ids)
            made += new
            sc.step(ids[-1] + 1, total, "batches")
        summary = {"batches": total, "generated": made, "reused": total - made,
                   "images": total * self.cfg.synthesis.batch_size,
                   "settings": dataclasses.asdict(inv.s),
                   "wall_s": time.perf_counter() - t0}
        write_index(folder, summary)
        return summary

    # ------------------------------------------------------------------ stage: student
    def _student_model(self) -> nn.Module:
        torch.manual_seed(derive_seed(self.config.seed, "init:student"))
        cfg = self.cfg.student.model or self.config.model
        return build_model(cfg, self.data.input_shape, self.data.num_classes).to(self.device)

    def _initial_pool(self, root: Path, kind: str) -> Pool:
        data, syn = self.data, self.cfg.synthesis
        if kind == "real":
            idx = data.union_train()
            return Pool(data.x[idx], data.y[idx])
        images = [data.x[self.student_real]]  # the real data held at the student, if any
        labels = [data.y[self.student_real]]
        if kind == "noise":  # the DeepInversion start, labelled by the teachers' ensemble
            batches = syn.initial_batches + self.cfg.student.epochs * (
                self.cfg.student.new_batches_per_epoch)
            teachers = self.teachers(root)
            for b in range(batches):
                x = batch_noise(derive_seed(self.config.seed, "noise-baseline"), b,
                                (syn.batch_size, *data.input_shape)).to(self.device)
                u8 = to_uint8(x, data.mean, data.std)
                images.append(u8)
                labels.append(teachers.ensemble_probs(data.features(u8)).argmax(1))
            return Pool(torch.cat(images), torch.cat(labels))
        folder = root / "synthesize" / "batches"
        for b in range(syn.initial_batches):
            found = read_batch(batch_path(folder, b))
            if found is None:
                raise UserError(f"{batch_path(folder, b)} is missing or damaged: the synthesize "
                                "stage did not finish; start a new run")
            images.append(found[0].to(self.device))
            labels.append(found[1].to(self.device))
        return Pool(torch.cat(images), torch.cat(labels))

    def stage_student(self, sc: StageContext, kind: str) -> dict[str, Any]:
        """The student (``kind`` student) or a baseline (real, noise), epoch by epoch, with a
        checkpoint after each; selected by validation accuracy."""
        apply_threads(self.threads)
        cfg, data, root = self.cfg.student, self.data, sc.pipeline.root
        run_dir, done, state = self._open_stage(sc)
        try:
            teachers = self.teachers(root)
            student = Student(cfg, self._student_model(), data, self.config.seed, kind,
                              teachers)
            best_state = {k: v.clone() for k, v in student.model.state_dict().items()}
            best: dict[str, float] = {"val_acc": -1.0}
            history: list[dict[str, float]] = []
            if state is not None:
                student.load_state(state["tensors"]["student"])
                best_state = state["tensors"]["best"]
                best, history = state["meta"]["best"], state["meta"]["history"]
            pool = self._initial_pool(root, kind)
            adaptive = kind == "student" and cfg.new_batches_per_epoch > 0
            inv = self.inversion(root, adaptive=cfg.adaptive) if adaptive else None
            made = 0
            t0 = time.perf_counter() - (state["meta"]["wall_s"] if state else 0.0)
            for epoch in range(cfg.epochs):
                fresh: list[tuple[torch.Tensor, torch.Tensor]] = []
                if inv is not None:
                    k = cfg.new_batches_per_epoch
                    first = self.cfg.synthesis.initial_batches + epoch * k
                    fresh, new = self.make_batches(
                        inv, sc.dir / "batches", list(range(first, first + k)),
                        student.model if cfg.adaptive else None, made_before=epoch < done)
                    made += new
                for images, labels in fresh:
                    pool.add(images, labels)
                if epoch < done:
                    continue
                train = student.train_epoch(epoch, pool, fresh)
                val = student.evaluate(data.x[self.val_idx], data.y[self.val_idx])
                test = student.evaluate(data.test_x, data.test_y)
                row = {"epoch": epoch + 1, "train_loss": train["loss"],
                       "train_acc": train["acc"], "val_loss": val[0], "val_acc": val[1],
                       "test_loss": test[0], "test_acc": test[1], "pool": float(len(pool))}
                history.append(row)
                wall = time.perf_counter() - t0
                run_dir.append_metrics(
                    (epoch + 1, kind, key.split("_")[0], key.split("_", 1)[1], value, 0.0, wall)
                    for key, value in row.items() if "_" in key)
                if val[1] > best["val_acc"] or not len(self.val_idx):
                    best = dict(row)
                    best_state = {k: v.clone() for k, v in student.model.state_dict().items()}
                run_dir.checkpoints.save(
                    epoch + 1, flatten({"student": student.state(), "best": best_state}),
                    {"best": best, "history": history, "wall_s": wall}, score=val[1])
                sc.step(epoch + 1, cfg.epochs, f"epochs  test acc {test[1]:.3f}  val acc "
                        f"{val[1]:.3f}  pool {len(pool)}")
            summary = {"test_acc": best.get("test_acc"), "val_acc": best.get("val_acc"),
                       "epoch": best.get("epoch"), "selected_by": "val_acc",
                       "final": history[-1] if history else {}, "images": len(pool),
                       "adaptive_batches_generated": made,
                       "wall_s": time.perf_counter() - t0}
            run_dir.write_summary(summary)
            if kind == "student":
                self._write_synthetic(root, pool)
            if self.config.output.plots:
                from fedweave.records.plots import plot_curves

                plot_curves({kind: run_dir.read_metrics()}, run_dir.plots_dir)
            return summary
        finally:
            run_dir.lock.release()

    def _open_stage(self, sc: StageContext) -> tuple[RunDirectory, int, dict[str, Any] | None]:
        """The stage's run directory and, when resuming, its newest checkpoint."""
        if sc.resume and (sc.dir / "config.yaml").is_file():
            run_dir = RunDirectory.open(sc.dir)
            run_dir.configure(self.config)
            ckpt = run_dir.checkpoints.load()
            if ckpt is not None:
                run_dir.truncate(ckpt[0])
                return run_dir, ckpt[0], {"tensors": unflatten(ckpt[1]), "meta": ckpt[2]}
            run_dir.start(self.config)
            return run_dir, 0, None
        return RunDirectory.create(self.config, at=sc.dir), 0, None

    def _write_synthetic(self, root: Path, pool: Pool) -> None:
        real = len(self.student_real)
        images, labels = pool.images[real:], pool.labels[real:]
        write_set(root / "synthetic.safetensors", images, labels,
                  {"images": len(labels), "initial_batches": self.cfg.synthesis.initial_batches,
                   "batch_size": self.cfg.synthesis.batch_size})
        if self.config.output.plots:
            data = self.data
            plot_synthetic(root / "plots" / "synthetic.png", (images, labels),
                           (data.test_x, data.test_y), data.num_classes)


def _summary(root: Path, pipe: Pipeline, results: dict[str, dict[str, Any]],
             config: Config) -> dict[str, Any]:
    teachers = dict(results["teachers"])
    ensemble = teachers.pop("ensemble")
    wall = {n: s.get("wall_s") for n, s in pipe.status.items()}
    return {
        "teachers": teachers, "ensemble": ensemble, "student": results["student"],
        "baselines": {k.removeprefix("baseline-"): v for k, v in results.items()
                      if k.startswith("baseline-")},
        "synthetic": results["synthesize"], "wall_s": wall,
        "version": __version__, "seed": config.seed,
    }


def distill(config: Config | None = None, *, resume: Path | None = None,
            teachers_from: Path | None = None, log: Log | None = None,
            listener: StageListener | None = None, callbacks: list[Callback] | None = None
            ) -> DistillResult:
    """Run (or resume) a distill pipeline; returns its run directory and summary.
    ``listener`` hears the stages' progress (``fedweave.workflows.stages``), ``callbacks``
    ride along the teachers' training run."""
    from fedweave.plugins import load_config

    if resume is not None:
        if teachers_from is not None:
            raise UserError("--teachers applies to a new run; --resume continues its own")
        if not (Path(resume) / "pipeline.json").is_file():
            raise UserError(f"--resume {resume}: not a distill run directory (no pipeline.json)")
        config = load_config(Path(resume) / "config.yaml")
        run = Distillation(config, None, log)
        pipe = Pipeline.open(Path(resume), run.stages())
        pipe.config = config
    else:
        assert config is not None
        run = Distillation(config, teachers_from, log)
        pipe = Pipeline.create(config, run.stages(), kind="distill")
    if listener is not None:
        pipe.listener = listener
    pipe.callbacks = list(callbacks or [])
    results = pipe.run()
    summary = _summary(pipe.root, pipe, results, config)
    lock = DirectoryLock(pipe.root, "pipeline run directory").acquire()
    try:
        atomic_write(pipe.root / "summary.json", json.dumps(summary, indent=2, default=str))
    finally:
        lock.release()
    return DistillResult(pipe.root, summary)

