"""``diffbench list``: what the other commands accept, by name: samplers, a comparison's
systems and benchmark cases."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = ("the registered samplers and installed models (plug-ins included), a comparison's "
        "systems or the benchmark cases, by name")
WHATS = ("samplers", "models", "systems", "cases")


def add_arguments(listing: argparse.ArgumentParser) -> None:
    listing.add_argument("what", choices=WHATS, help="what to list")
    listing.add_argument("--config", default=None, metavar="YAML",
                         help="systems: the compare config whose systems to list (default: the "
                              "default comparison, configs/compare.yaml)")
    listing.add_argument("--cases-file", type=Path, default=None, metavar="YAML",
                         help="cases: a repository's diffbench ab cases file (default: "
                              "./diffbench_ab.yaml if there is one, else the built-in cases)")
    listing.add_argument("--json", action="store_true",
                         help="one JSON object per line instead of a table (default: a table)")


def sampler_rows() -> list[dict]:
    """Each registered sampler: its name, label, the networks it reads, defaults, options."""
    import inspect

    from diffbench.sampling import ORIGINS, SAMPLERS
    from diffbench.sampling.prediction import FLOW_PREDICTIONS

    rows = []
    for name, cls in SAMPLERS.items():
        options = [option for option in ("eta", "variance")
                   if option in inspect.signature(cls).parameters]
        rows.append({"name": name, "label": cls.label, "reads": list(cls.predictions),
                     "steps": cls.default_steps or "every timestep",
                     "spacing": cls.spacing_for(cls.default_prediction),
                     "options": options + (["shift"] if set(cls.predictions) & set(
                         FLOW_PREDICTIONS) else []),
                     "from": ORIGINS.get(name, "diffbench")})
    return rows


def model_rows() -> list[dict]:
    """Each model installed packages declare (entry-point group ``diffbench.models``): its name,
    factory and package, without loading it; the shipped checkpoints are the built-in models."""
    from diffbench.core.plugins import MODEL_GROUP, installed, origin

    rows = [{"name": "(checkpoint)", "factory": "{space}[_{prediction}].safetensors",
             "from": "diffbench"}]
    return rows + [{"name": name, "factory": point.value, "from": origin(point)}
                   for name, point in installed(MODEL_GROUP).items()]


def system_rows(config_path: str | None) -> list[dict]:
    """Each system of a compare config as the comparison names it (its networks loaded on the
    CPU, as ``diffbench compare`` does): name, space, network, sampler, steps."""
    import torch

    from diffbench.compare.systems import build_systems
    from diffbench.io.config import load_compare_config

    config = load_compare_config(config_path)
    built = build_systems(config, (), torch.device("cpu"))
    return [{"name": system.name, "space": spec.space, "network": spec.prediction,
             "sampler": system.sampler.name or spec.sampler, "steps": system.num_steps}
            for system, spec in zip(built, config.systems)]


def case_rows(cases_file: Path | None) -> list[dict]:
    """Each case ``diffbench ab --cases`` takes here: the cases file's (``--cases-file``, or
    the repository's ``diffbench_ab.yaml``), else the built-in ones of the benches."""
    from diffbench.gate.cases import all_cases
    from diffbench.gate.user_cases import cases_file_in, load_user_cases

    cases_file = cases_file_in(Path.cwd(), cases_file)
    cases = load_user_cases(cases_file) if cases_file else all_cases()
    return [{"name": case.name, "kind": case.kind, "quick": case.quick}
            for case in cases.values()]


def run(args: argparse.Namespace) -> None:
    rows = {"samplers": sampler_rows, "models": model_rows,
            "systems": lambda: system_rows(args.config),
            "cases": lambda: case_rows(args.cases_file)}[args.what]()
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return
    columns = list(rows[0])
    cells = [[", ".join(map(str, v)) if isinstance(v, list) else str(v) for v in row.values()]
             for row in rows]
    widths = [max(len(c), *(len(line[i]) for line in cells)) for i, c in enumerate(columns)]
    for line in [columns, *cells]:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip())
