"""``diffbench list``: what the other commands accept, by name: samplers and benchmark cases."""

from __future__ import annotations

import argparse
import json

HELP = "the registered samplers (plug-ins included) or the benchmark cases, by name"
WHATS = ("samplers", "cases")


def add_arguments(listing: argparse.ArgumentParser) -> None:
    listing.add_argument("what", choices=WHATS, help="what to list")
    listing.add_argument("--json", action="store_true",
                         help="one JSON object per line instead of a table (default: a table)")


def sampler_rows() -> list[dict]:
    """Each registered sampler: its name, label, the networks it reads, defaults, options."""
    import inspect

    from diffbench.sampling import SAMPLERS

    rows = []
    for name, cls in SAMPLERS.items():
        options = [option for option in ("eta", "variance")
                   if option in inspect.signature(cls).parameters]
        rows.append({"name": name, "label": cls.label, "reads": list(cls.predictions),
                     "steps": cls.default_steps or "every timestep",
                     "spacing": cls.spacing_for(cls.default_prediction),
                     "options": options + (["shift"] if "flow" in cls.predictions else [])})
    return rows


def case_rows() -> list[dict]:
    """Each benchmark case of ``diffbench ab --cases`` and the benches."""
    from diffbench.gate.cases import all_cases

    return [{"name": case.name, "kind": case.kind, "quick": case.quick}
            for case in all_cases().values()]


def run(args: argparse.Namespace) -> None:
    rows = sampler_rows() if args.what == "samplers" else case_rows()
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
