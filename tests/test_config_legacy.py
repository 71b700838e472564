"""Older engine keys migrate on load: same resolved config, one warning each, conflicts refused,
and a checkpoint recorded under the old names still matches its run's config."""

import copy
import logging

import pytest

from fedweave.config import config_to_dict, load_config
from fedweave.config.legacy import migrate_legacy_keys
from fedweave.errors import UserError
from fedweave.runner import _same_config, config_fingerprint

NEW = ["engine.name=loop", "launcher.name=distributed", "launcher.timeout_s=12",
       "launcher.exchange=point_to_point"]
OLD = ["engine.backend=loop", "engine.name=distributed", "engine.timeout_s=12",
       "engine.exchange=point_to_point"]


def test_old_keys_resolve_to_the_new_config(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="fedweave"):
        old = load_config(None, OLD)
    assert config_to_dict(old) == config_to_dict(load_config(None, NEW))
    assert config_fingerprint(old)[0] == config_fingerprint(load_config(None, NEW))[0]
    assert old.engine.name == "loop" and old.launcher.name == "distributed"
    local = load_config(None, ["engine.name=local"])
    assert local.launcher.name == "single" and local.engine.name == "auto"


def test_each_old_key_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    import fedweave.config.legacy as legacy
    legacy._warned.clear()
    with caplog.at_level(logging.WARNING, logger="fedweave"):
        load_config(None, OLD)
        load_config(None, OLD)
    lines = [r.getMessage() for r in caplog.records if "is now" in r.getMessage()]
    assert len(lines) == 4, lines
    assert "config: engine.backend is now engine.name (migrated; rename it in the file)" in lines


@pytest.mark.parametrize("keys", [["engine.backend=loop", "engine.name=fused"],
                                  ["engine.timeout_s=5", "launcher.timeout_s=6"]])
def test_a_key_under_both_spellings_is_refused(keys: list[str]) -> None:
    with pytest.raises(UserError, match="both set"):
        load_config(None, keys)


def test_checkpoint_recorded_under_old_names_matches() -> None:
    cfg = load_config(None, ["engine.name=vectorized", "launcher.timeout_s=40"])
    digest, resolved = config_fingerprint(cfg)
    old = copy.deepcopy(resolved)
    launcher = old.pop("launcher")
    old["engine"] = {"name": "local", "backend": old["engine"]["name"],
                     **{k: v for k, v in old["engine"].items() if k != "name"},
                     "timeout_s": launcher["timeout_s"], "exchange": launcher["exchange"]}
    assert _same_config({"config_sha256": "0" * 64, "config": old}, digest)
    old["engine"]["timeout_s"] = 41.0  # a different run: refused as before
    assert not _same_config({"config_sha256": "0" * 64, "config": old}, digest)
    assert migrate_legacy_keys({"engine": {"name": "loop"}}) == {"engine": {"name": "loop"}}
