"""Start-up imports only what is used: ``fedweave --version`` and ``--help`` never load torch,
and a config imports the one algorithm it names (the registries map built-in names to their
modules and import one on lookup). Each check runs in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fedweave.algorithms.base import ALGORITHMS, BUILTIN_ALGORITHMS
from fedweave.data.sources.base import DATASETS
from fedweave.errors import UserError
from fedweave.models.base import BUILTIN_MODELS, MODELS
from fedweave.registry import Registry


def modules_after(code: str) -> list[str]:
    """``sys.modules`` of a fresh interpreter after running ``code``."""
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True, timeout=300)
    return list(json.loads(out.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("flag", ["--version", "--help"])
def test_version_and_help_do_not_import_torch(flag: str) -> None:
    loaded = modules_after(f"""
import sys
sys.argv = ["fedweave", "{flag}"]
from fedweave.cli import main
try:
    main()
except SystemExit as exc:
    assert exc.code in (0, None), exc.code
""")
    assert "fedweave.cli" in loaded
    assert not [m for m in loaded if m == "torch" or m.startswith("torch.")]


def test_a_fedavg_config_imports_no_other_algorithm() -> None:
    loaded = modules_after("""
from fedweave.plugins import load_config
from fedweave.runner import build_algorithm
from fedweave.context import build_context
cfg = load_config(None, ["algorithm.name=fedavg", "model.name=mlp", "data.nodes=3"])
build_algorithm(build_context(cfg))
""")
    algorithms = [m for m in loaded if m.startswith("fedweave.algorithms.")]
    assert "fedweave.algorithms.federated.fedavg" in algorithms
    for wing in ("decentralized", "asynchronous", "oneshot"):
        assert not [m for m in algorithms if f".{wing}." in m], wing
    assert "fedweave.algorithms.federated.scaffold" not in algorithms
    assert "fedweave.models.resnet" not in loaded  # the MLP's module only
    assert "matplotlib" not in loaded and "scipy" not in loaded


def test_every_builtin_name_is_listed_without_import_and_registered_by_its_module() -> None:
    for registry, table in ((ALGORITHMS, BUILTIN_ALGORITHMS), (MODELS, BUILTIN_MODELS)):
        assert set(table) <= set(registry.names())
        for name in table:
            assert registry.get(name) is not None  # its module registers it under that name
    registry: Registry[int] = Registry("thing", {"absent": "fedweave.errors"})
    with pytest.raises(UserError, match="unknown thing 'absent'; choose one of: absent"):
        registry.get("absent")  # the module imported but did not register it
    with pytest.raises(UserError, match="unknown dataset 'nope'"):
        DATASETS.get("nope")
