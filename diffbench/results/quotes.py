"""What a published span can quote from its source, a committed ``diffbench compare`` run:
its tables, one row's figure, a ratio of two rows, the machine it ran on and its figures, each
formatted as ``diffbench report`` formats it (:mod:`diffbench.results.published` places them)."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diffbench.results.report import cell, markdown_table
from diffbench.results.results_files import write_reports
from diffbench.results.row import column_format
from diffbench.results.rowstore import RowStore

MACHINES = ("EPYC", "Xeon", "Ryzen", "Graviton", "H100", "H200", "A100", "L4", "T4")
"""Processor and GPU names a page may cite only through a source's ``machine`` span."""


@dataclass
class Source:
    """A committed comparison: its rows (with the paired figures ``diffbench report``
    computes), its run.json, and its figures drawn into a scratch folder."""

    name: str
    folder: Path
    run: dict[str, Any]
    results: list[dict[str, Any]]
    drawn: dict[str, Path]
    figures: set[str] = field(default_factory=set)
    scratch: Any = None

    @property
    def slug(self) -> str:
        """The folder of its figures under docs/figures/: the source's name."""
        return self.name

    @classmethod
    def load(cls, folder: Path, name: str) -> Source:
        if not folder.is_dir():
            raise ValueError(f"no published source {folder}; allowed: a `diffbench compare` "
                             f"run folder under published/")
        scratch = tempfile.TemporaryDirectory(prefix=f"published-{name}-")
        store = RowStore.read(folder)
        results, files = write_reports(store, out=scratch.name)
        return cls(name, folder, store.run(), [r for r in results if not r.get("failure")],
                   {f.name: f for f in files if f.suffix == ".png"}, scratch=scratch)

    def row(self, spec: str) -> dict[str, Any]:
        """The row ``NAME@STRENGTH`` (equal strength) or ``NAME@STRENGTH@VIEW``."""
        name, strength, *view = spec.split("@")
        view = view[0] if view else "equal_strength"
        for row in self.results:
            if (row["name"], row["view"], f"{row['strength']:g}") == (name, view, strength):
                return row
        raise ValueError(f"{self.folder} has no row {spec!r}; allowed: "
                         + ", ".join(sorted({f"{r['name']}@{r['strength']:g}@{r['view']}"
                                             for r in self.results})))

    def machine(self) -> str:
        """Where the source ran, as its run.json records it."""
        return machine_of(self.run)


@dataclass
class JsonSource:
    """A committed JSON results file (``diffbench evaluate``'s, a sweep's): quoted by
    ``field`` and ``machine`` spans."""

    name: str
    folder: Path
    run: dict[str, Any]
    figures: set[str] = field(default_factory=set)
    drawn: dict[str, Path] = field(default_factory=dict)
    scratch: Any = None

    @classmethod
    def load(cls, path: Path, name: str) -> JsonSource:
        if not path.is_file():
            raise ValueError(f"no published source {path}; allowed: a committed JSON file")
        return cls(name, path, json.loads(path.read_text()),
                   scratch=tempfile.TemporaryDirectory(prefix="published-"))

    @property
    def slug(self) -> str:
        """The folder of its figures under docs/figures/: the file's stem."""
        return self.folder.stem

    def machine(self) -> str:
        return machine_of(self.run)


def machine_of(run: dict[str, Any]) -> str:
    """Where a source ran: its ``environment`` facts (run.json, evaluation.json, a benchmark
    JSON's ``diffbench`` section) or its ``machine`` line."""
    env = (run.get("environment") or run.get("diffbench", {}).get("environment")
           or run.get("setup", {}).get("environment"))
    if not env:
        return str(run.get("machine", "a machine its run.json does not name (an older run)"))
    device = env.get("cuda_device") or "CPU only"
    torch = env.get("torch", "?").split("+")[0]
    cpu = env.get("cpu", "?").replace("(R)", "")
    return f"{cpu} ({env.get('torch_threads', '?')} torch threads), torch {torch}, {device}"


def load_source(root: Path, name: str) -> Source | JsonSource:
    """A source by its name: a run folder under published/, or a committed JSON file's path
    from the repository root."""
    if name.endswith(".json"):
        return JsonSource.load(root / name, name)
    return Source.load(root / "published" / name, name)


def options(args: list[str]) -> tuple[list[str], dict[str, str]]:
    """A span's words split into positional ones and ``key=value`` ones."""
    return ([a for a in args if "=" not in a],
            dict(a.split("=", 1) for a in args if "=" in a))


def quote_table(source: Source, args: list[str], _: str) -> str:
    """Every row of one view (``view=``, default equal_strength), as results.md has it."""
    _, keys = options(args)
    view = keys.get("view", "equal_strength")
    return "\n\n" + markdown_table([r for r in source.results if r["view"] == view]) + "\n"


def quote_excerpt(source: Source, args: list[str], _: str) -> str:
    """Some columns (``columns=a,b``) of the rows at one strength (``strength=``), optionally
    of some systems only (``names=A,B``)."""
    _, keys = options(args)
    names = keys["names"].split(",") if "names" in keys else None
    rows = [r for r in source.results if r["view"] == "equal_strength"
            and f"{r['strength']:g}" == keys["strength"] and (names is None or r["name"] in names)]
    return "\n\n" + markdown_table(rows, keys["columns"].split(",")) + "\n"


def quote_value(source: Source, args: list[str], _: str) -> str:
    """One row's figure as its table cell shows it; ``bare``: without its interval."""
    words, keys = options(args)
    row, key = source.row(words[0]), words[1]
    fmt = keys.get("format", column_format(key))
    return fmt.format(row[key]) if "bare" in words[2:] or "format" in keys else \
        cell(row, key, fmt)


def quote_ratio(source: Source, args: list[str], _: str) -> str:
    """``A@S B@S KEY``: row A's figure over row B's, as ``12.3x``."""
    words, keys = options(args)
    a, b = source.row(words[0])[words[2]], source.row(words[1])[words[2]]
    return keys.get("format", "{:.1f}x").format(a / b)


def quote_machine(source: Source, args: list[str], _: str) -> str:
    """The processor, threads, torch and device the source ran on."""
    return source.machine()


def quote_field(source: Source | JsonSource, args: list[str], _: str) -> str:
    """``a.b.c [format=...]``: a value of the source's JSON (run.json for a run folder)."""
    words, keys = options(args)
    return keys.get("format", "{}").format(lookup(source.run, words[0]))


def lookup(data: Any, dotted: str) -> Any:
    """``data``'s value at a dotted path (list items by index)."""
    for key in dotted.split("."):
        data = data[int(key)] if isinstance(data, list) else data[key]
    return data


def quote_records(source: Source | JsonSource, args: list[str], _: str) -> str:
    """``a.b columns=x,y [format=...]``: a list of records of the source's JSON as a table,
    numbers in ``format`` (default ``{:.4f}``), flags as yes or **no**."""
    words, keys = options(args)
    records = lookup(source.run, words[0])
    columns, fmt = keys["columns"].split(","), keys.get("format", "{:.4f}")

    def shown(value: Any) -> str:
        if isinstance(value, bool):
            return "yes" if value else "**no**"
        return fmt.format(value) if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join(" --- " for _ in columns) + "|"]
    lines += ["| " + " | ".join(shown(r.get(c)) for c in columns) + " |" for r in records]
    return "\n\n" + "\n".join(lines) + "\n\n"


def quote_shapes_figure(source: JsonSource, args: list[str], link: str) -> str:
    """``FILE ALT...``: a latent-shape sweep's plot (``diffbench shapes``' JSON), drawn anew."""
    from diffbench.shapes import Sweep, plot

    source.drawn[args[0]] = plot(Sweep(**source.run), Path(source.scratch.name) / args[0])
    return quote_figure(source, args, link)


def quote_figure(source: Source | JsonSource, args: list[str], link: str) -> str:
    """``FILE ALT...``: the source's figure ``FILE`` (drawn by ``diffbench report``) with a
    caption naming its source and machine."""
    figure, alt = args[0], " ".join(args[1:]) or args[0]
    if figure not in source.drawn:
        raise ValueError(f"{source.folder} draws no {figure}; allowed: "
                         f"{', '.join(sorted(source.drawn))}")
    source.figures.add(figure)
    env = source.run.get("environment") or source.run.get("setup", {}).get("environment", {})
    where = f"published/{source.name}/" if isinstance(source, Source) else source.name
    return (f"\n\n![{alt}]({link}/{figure})\n\n*Drawn by `nox -s publish` from `{where}` "
            f"(diffbench {env.get('git_commit', '?')[:7]}), measured on "
            f"{source.machine()}.*\n\n")


KINDS: dict[str, Callable[[Source, list[str], str], str]] = {
    "table": quote_table, "excerpt": quote_excerpt, "value": quote_value,
    "ratio": quote_ratio, "machine": quote_machine, "figure": quote_figure,
    "field": quote_field, "records": quote_records, "shapes_figure": quote_shapes_figure,
}
"""Each kind of span and what renders it (its source, its words, the figures' folder)."""
