"""The installed versions of the packages constraints.txt pins, recorded with every result."""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

import torch

from diffbench.core.environment import (
    CONSTRAINTS_FILE,
    constraints_file,
    environment_facts,
    package_facts,
    read_constraints,
)

REPO = Path(__file__).resolve().parents[1]


def _installed(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def test_the_facts_list_each_constrained_package_with_its_installed_version():
    assert constraints_file() == REPO / CONSTRAINTS_FILE
    pinned = read_constraints(REPO / CONSTRAINTS_FILE)
    assert pinned["torch"] == "2.14.1" and "mlflow-skinny" in pinned
    facts = environment_facts()
    assert facts["packages"] == {name: _installed(name) for name in pinned}
    assert facts["packages"]["torch"] == torch.__version__.split("+")[0]
    differing = [f"{name} {facts['packages'][name]} ({CONSTRAINTS_FILE}: {version})"
                 for name, version in pinned.items()
                 if facts["packages"][name] not in (None, version)]
    assert facts["constraints"] == (differing or "matched")
    json.dumps(facts)


def test_a_version_other_than_the_constrained_one_is_reported(tmp_path):
    constraints = tmp_path / "constraints.txt"
    constraints.write_text(f"# pinned\nTorch==0.0.1  # wrong on purpose\n"
                           f"numpy=={_installed('numpy')}\nno_such.package==1.0\n")
    facts = package_facts(constraints)
    torch_version = _installed("torch")
    assert facts["packages"] == {"torch": torch_version, "numpy": _installed("numpy"),
                                 "no-such-package": None}  # not installed: not a difference
    assert facts["constraints"] == [f"torch {torch_version} (constraints.txt: 0.0.1)"]
    assert environment_facts(constraints)["constraints"] == facts["constraints"]


def test_a_local_label_matches_and_a_missing_file_is_said(tmp_path):
    constraints = tmp_path / "c.txt"
    constraints.write_text(f"torch=={_installed('torch').split('+')[0]}\n")
    assert package_facts(constraints)["constraints"] == "matched"
    missing = package_facts(tmp_path / "absent.txt")
    assert missing["constraints"] == f"not found: {tmp_path / 'absent.txt'}"
    assert missing["packages"]["torch"] == _installed("torch")  # diffbench's own dependencies
    assert "mlflow-skinny" in missing["packages"]
