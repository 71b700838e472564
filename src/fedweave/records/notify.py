"""Notifications about a run (reference system 004 pushed training progress to Telegram)
through Apprise (optional extra: ``pip install 'fedweave[notify]'``), so one URL scheme
reaches Telegram (``tgram://TOKEN/CHAT``), Slack, Discord, ntfy, e-mail (``mailto://``),
Matrix, a JSON webhook (``json://host/path``, ``jsons://`` for HTTPS) and the rest of
Apprise's services.

The URLs hold tokens, so they never come from the config: they are read from the environment
variable ``FEDWEAVE_NOTIFY`` (comma-separated) and from the file ``notify.urls_file`` (one
per line, ``#`` comments), which must lie outside the run directory. They are never written
to config.yaml, summary.json, logs or reports, and messages name a service by its scheme
only. ``notify.events`` picks the messages: ``start``, ``every_k`` (every ``notify.every``
rounds), ``finish``, ``failure`` (also interruptions). Proxies come from the usual
``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``ALL_PROXY`` variables (``socks5://`` needs PySocks,
part of the extra), as reference system 004's SOCKS/HTTP proxy option did. A notifier that
fails prints one warning line with the reason the service gave (URLs and token-like strings
redacted); it never fails the run.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedweave.callbacks import Callback, register_callback
from fedweave.config import Config, read_text
from fedweave.errors import UserError

if TYPE_CHECKING:
    from fedweave.callbacks import RunResult, RunView

ENV = "FEDWEAVE_NOTIFY"
log = logging.getLogger("fedweave")


def scheme(url: str) -> str:
    """The service part of a URL (``tgram``), never the rest (it holds the token)."""
    return url.split("://", 1)[0] if "://" in url else "?"


def notify_urls(config: Config, environ: dict[str, str] | None = None) -> list[str]:
    """The Apprise URLs of this run: ``$FEDWEAVE_NOTIFY`` and ``notify.urls_file``."""
    env = os.environ if environ is None else environ
    urls = [u.strip() for u in env.get(ENV, "").split(",") if u.strip()]
    path = config.notify.urls_file
    if path is not None:
        path = Path(path).expanduser()
        if not path.exists():
            raise UserError(f"notify.urls_file {path}: cannot read it (No such file or "
                            "directory)")
        text = read_text(path, "notify.urls_file", "Apprise URLs, one per line")
        for line in text.splitlines():
            if not line.strip().startswith("#"):
                urls += [u.strip() for u in line.split(",") if u.strip()]
    return list(dict.fromkeys(urls))


_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S+")
_TOKEN = re.compile(r"[A-Za-z0-9_:-]{20,}")


def redact(text: str) -> str:
    """One line without URLs or token-like strings (20+ letters, digits, ``_:-``)."""
    text = _TOKEN.sub("***", _URL.sub("<url>", " ".join(text.split())))
    return text[:240]


def failure_reason(log_text: str) -> str:
    """The reasons Apprise logged for an undelivered message (its warning and error lines,
    redacted, each once), in one line."""
    lines = [redact(line) for line in log_text.splitlines() if line.strip()]
    return "; ".join(dict.fromkeys(lines))[:400] or "no reason given by the service"


def _pct(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) else "–"


class Notifier(Callback):
    """Sends the configured events through Apprise; every failure is only a warning."""

    def __init__(self, config: Config, urls: list[str]) -> None:
        try:
            import apprise
        except ImportError:
            raise UserError(f"notifications ({ENV} or notify.urls_file) need apprise: pip "
                            "install 'fedweave[notify]'") from None
        quiet = logging.getLogger("apprise")  # its lines may hold URLs: never printed as is
        quiet.setLevel(logging.CRITICAL)
        quiet.propagate = False
        self.apprise = apprise
        self.events = set(config.notify.events)
        self.every = config.notify.every
        self.targets = apprise.Apprise()
        self.services: list[str] = []
        for url in urls:
            if self.targets.add(url):
                self.services.append(scheme(url))
            else:
                log.warning("notify: a %s:// URL is not a valid Apprise URL; it is skipped",
                            scheme(url))
        self.where = ""
        self.name = config.name

    def send(self, title: str, body: str, kind: str = "info") -> bool:
        if not self.services:
            return False
        try:
            with self.apprise.LogCapture(level=logging.WARNING, fmt="%(message)s") as captured:
                ok = bool(self.targets.notify(title=title, body=body, notify_type=getattr(
                    self.apprise.NotifyType, kind.upper())))
            said = captured.getvalue()
        except Exception as exc:  # a notifier never fails the run
            log.warning("notify: sending failed (%s: %s)", type(exc).__name__,
                        redact(str(exc)) or "no detail")
            return False
        if not ok:
            log.warning("notify: a message to %s was not delivered (%s)",
                        ", ".join(f"{s}://" for s in self.services),
                        failure_reason(said))
        return ok

    def on_start(self, runner: RunView) -> None:
        if runner.run_dir is not None:
            self.where = str(runner.run_dir.path)
            secret = runner.config.notify.urls_file
            if secret is not None and Path(secret).expanduser().resolve().is_relative_to(
                    runner.run_dir.path.resolve()):
                raise UserError(f"notify.urls_file {secret}: it lies inside the run directory "
                                "(whose files are shared); keep it outside")
        if "start" in self.events:
            cfg = runner.config
            verb = f"resumed at round {runner.start_round}" if runner.start_round else "started"
            self.send(f"fedweave: {self.name} {verb}",
                      f"{cfg.algorithm.name} on {cfg.data.dataset}, {cfg.data.nodes} nodes, "
                      f"{cfg.rounds} rounds\n{self.where}")

    def on_evaluate(self, runner: RunView, r: int, row: dict[str, Any]) -> None:
        if "every_k" in self.events and (r + 1) % self.every == 0:
            self.send(f"fedweave: {self.name} round {r + 1}/{runner.config.rounds}",
                      f"test acc {_pct(row.get('test_acc'))}, val acc "
                      f"{_pct(row.get('val_acc'))}, train loss {_pct(row.get('train_loss'))}"
                      f"\n{self.where}")

    def on_finish(self, runner: RunView, result: RunResult) -> None:
        if "finish" in self.events:
            s = result.summary
            best = s.get("best", {})
            self.send(f"fedweave: {self.name} finished",
                      f"round {s['rounds_done']}/{s['rounds']}: test acc "
                      f"{_pct(s['final'].get('test_acc'))}; best by validation: round "
                      f"{best.get('round', '–')}, test acc {_pct(best.get('test_acc'))}; "
                      f"{s['wall_s']:.0f} s\n{self.where}", "success")

    def on_failure(self, runner: RunView, exc: BaseException) -> None:
        if "failure" in self.events:
            done = int(runner.history[-1]["round"]) if runner.history else runner.start_round
            what = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
            self.send(f"fedweave: {self.name} stopped",
                      f"after round {done}/{runner.config.rounds}: {type(exc).__name__}: "
                      f"{what}\n{self.where}", "failure")


@register_callback
def _notifier(config: Config) -> Callback | None:
    from fedweave.distributed import is_writer

    urls = notify_urls(config)
    return Notifier(config, urls) if urls and is_writer() else None
