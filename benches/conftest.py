"""What only this repository's benches add to the diffbench pytest plugin
(:mod:`diffbench.bench.plugin`, which brings the options, fixtures and the quick and cuda
markers; docs/pytest_plugin.md): the opt-in ``peer`` group. Their fidelity baselines are named
in pyproject.toml's ``[tool.pytest.ini_options]``."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers",
                            "peer: benchmarks of the diffusers peer model (opt-in: -m peer)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The peer group is opt-in: it runs only when ``-m`` names it (e.g. ``-m peer``)."""
    if "peer" in (config.getoption("markexpr") or ""):
        return
    opt_in = pytest.mark.skip(reason="opt-in bench group: run with -m peer")
    for item in items:
        if item.get_closest_marker("peer"):
            item.add_marker(opt_in)
