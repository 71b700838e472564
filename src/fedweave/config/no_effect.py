"""Keys that are valid but have no effect in their context get one warning each.

The config refuses what cannot act at all (each section's ``check`` in ``fedweave.config``:
topology keys of a federated run, ``clock.asynchronous`` for synchronous algorithms, ...); this
module looks at keys whose effect depends on another key (``data.alpha`` only shapes a
``dirichlet`` partition, ``train.nesterov`` needs momentum, ``model.hidden`` is the MLP's,
...). A key counts as set
when it differs from its default, so a dumped config.yaml (every default spelt out) is quiet.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from fedweave.config import Config
from fedweave.models.base import MODEL_OPTIONS, MODELS

log = logging.getLogger("fedweave")
_WARNED: set[str] = set()


def _set(section: object, key: str) -> bool:
    field = type(section).model_fields[key]  # type: ignore[attr-defined]
    return bool(getattr(section, key) != field.get_default(call_default_factory=True))


def _rules(cfg: Config) -> Iterable[tuple[str, str]]:
    d, m, t, a = cfg.data, cfg.model, cfg.train, cfg.algorithm
    for key, partition in (("alpha", "dirichlet"), ("shards_per_node", "shards"),
                           ("classes_per_node", "classes"), ("class_share_low", "classes"),
                           ("class_order", "classes"), ("class_shift", "classes"),
                           ("sigma", "quantity"), ("natural_blocks", "natural"),
                           ("unif", "heterogeneous")):
        if _set(d, key) and d.partition != partition:
            yield f"data.{key}", f"data.partition={d.partition} (it shapes {partition} only)"
    if d.dataset != "synthetic":
        for key in type(d.synthetic).model_fields:
            if _set(d.synthetic, key):
                yield f"data.synthetic.{key}", f"data.dataset={d.dataset}"
    MODELS.load(m.name)  # a built-in model declares its options when its module is imported
    options = MODEL_OPTIONS.get(m.name)
    if options is not None:
        for key in ("norm", "width", "group_channels", "dropout", "last_dropout", "hidden",
                    "stem"):
            if _set(m, key) and key not in options:
                yield f"model.{key}", f"model.name={m.name}"
    if _set(m, "group_channels") and m.norm != "group":
        yield "model.group_channels", f"model.norm={m.norm}"
    if t.optimizer == "adam":
        for key in ("momentum", "nesterov"):
            if _set(t, key):
                yield f"train.{key}", "train.optimizer=adam"
    elif t.nesterov and t.momentum == 0:
        yield "train.nesterov", "train.momentum=0"
    if t.scheduler == "none":
        for key in ("step_size", "gamma"):
            if _set(t, key):
                yield f"train.{key}", "train.scheduler=none"
    for key, scheduler in (("step_size", "step"), ("milestones", "multistep")):
        if _set(t, key) and t.scheduler not in (scheduler, "none"):
            yield f"train.{key}", f"train.scheduler={t.scheduler} (it shapes {scheduler} only)"
    if _set(t, "milestones") and t.scheduler == "none":
        yield "train.milestones", "train.scheduler=none"
    if t.local_steps is not None:
        for key in ("local_epochs", "epoch_samples"):
            if _set(t, key):
                yield f"train.{key}", f"train.local_steps={t.local_steps} (it fixes the steps)"
    yield from _engine_output_rules(cfg)
    yield from _unused_sections(cfg)
    if getattr(a, "mode", None) == "sync" and _set(a, "window_s"):
        yield "algorithm.window_s", "algorithm.mode=sync (the merge waits for every job)"
    opt = getattr(a, "server_optimizer", None)
    if opt is not None:
        for key, users in (("server_momentum", {"momentum"}), ("server_betas", {"adam", "yogi"}),
                           ("server_eps", {"adam", "yogi", "adagrad"})):
            if _set(a, key) and opt not in users:
                yield f"algorithm.{key}", f"algorithm.server_optimizer={opt}"


def _unused_sections(cfg: Config) -> Iterable[tuple[str, str]]:
    """Keys written for a section the run does not use, at their default value (a changed
    value is refused by the section's ``check``): ``topology.name: ring`` on a federated run.
    A dumped config.yaml writes every key of every section and stays quiet."""
    top, alg = cfg.topology, cfg.algorithm
    given = top.model_fields_set
    if alg.kind != "decentralized" and given and given != set(type(top).model_fields):
        for key in sorted(given):
            yield (f"topology.{key}", f"algorithm.name={alg.name} (topology applies to "
                   f"decentralized algorithms; {alg.name} is {alg.kind})")


def _engine_output_rules(cfg: Config) -> Iterable[tuple[str, str]]:
    """``engine``, ``launcher``, ``output``, ``notify`` and ``clock`` keys that another key
    switches off."""
    e, o, n, c = cfg.engine, cfg.output, cfg.notify, cfg.clock
    if _set(e, "chunk") and e.name == "loop":
        yield "engine.chunk", "engine.name=loop (it sizes the batched engines' kernel calls)"
    if _set(cfg.launcher, "exchange") and cfg.algorithm.kind != "decentralized":
        yield "launcher.exchange", f"algorithm.name={cfg.algorithm.name} (it routes peer messages)"
    if _set(o, "keep_every") and o.keep != "every_k":
        yield "output.keep_every", f"output.keep={o.keep} (it shapes every_k only)"
    if _set(o, "keep") and o.checkpoint_every == 0:
        yield "output.keep", "output.checkpoint_every=0 (no checkpoint is written)"
    if _set(n, "every") and "every_k" not in n.events:
        yield "notify.every", "notify.events without every_k"
    if _set(c, "crash_rounds") and not c.node_crash:
        yield "clock.crash_rounds", "clock.node_crash=0"


def warn_no_effect(cfg: Config) -> list[str]:
    """Log one warning per key without effect (once per process); returns the messages."""
    out = []
    for key, why in _rules(cfg):
        msg = f"config: {key} has no effect with {why}"
        out.append(msg)
        if msg not in _WARNED:
            _WARNED.add(msg)
            log.warning(msg)
    return out
