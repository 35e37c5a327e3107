"""The published numbers: every table, figure and quoted number of the README and docs/ that
comes from a committed comparison, rewritten from it, and a check that they still agree.

A quote in a page is a marked span; its text between the markers is generated, never typed::

    <!-- published compare-full value DDIM-50@0.3 mse -->0.0476 [0.0443, 0.0512]<!-- /published -->

``compare-full`` names the source, a ``diffbench compare`` run folder under ``published/``
(its results.jsonl, run.json and rows: the same files ``diffbench report`` reads). The kinds
(:data:`KINDS`): ``table``, ``excerpt``, ``value``, ``ratio``, ``machine`` and ``figure``.
``python -m diffbench.results.published`` (``nox -s publish``) rewrites every span and figure
from the sources; ``--check`` only compares, and fails on a span or figure edited by hand, on a
stale or unused figure, and on a page that names a machine outside its sources' spans.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from diffbench.results import bench_quotes, quotes
from diffbench.results.quotes import MACHINES, JsonSource, Source, load_source

SOURCES = Path("published")
"""The committed sources, one ``diffbench compare`` run folder each."""
FIGURES = Path("docs") / "figures"
"""Where the published figures go: ``docs/figures/<source>/<file>``."""
PAGES = ("README.md", "docs/*.md")
"""The pages whose spans are published."""
SPAN = re.compile(r"(?<!`)<!-- published (?P<source>[\w./-]+) (?P<kind>\w+)(?P<args>[^>]*?) -->"
                  r"(?P<text>.*?)<!-- /published -->", re.DOTALL)
"""One marked span: ``<!-- published SOURCE KIND ARGS -->TEXT<!-- /published -->``."""
KINDS = {**quotes.KINDS, **bench_quotes.KINDS}
"""Every kind of span: a comparison's (:mod:`~diffbench.results.quotes`) and a benchmark
run's (:mod:`~diffbench.results.bench_quotes`)."""
UNCHECKED_MACHINES = (
    "docs/gpu.md",  # the GPU kinds the project may be lent: plans, not measurements
    "docs/latent_shapes.md",  # written whole by `diffbench shapes` from its JSON, machine included
    # pages whose measurements are not committed sources yet: each names its run's machine
    "docs/diffusers.md", "docs/flow.md", "docs/generation.md", "docs/nfe_sweep.md",
    "docs/one_step.md", "docs/regression_gate.md",
)
"""Pages exempt from the machine check: every other page names a machine only through a
``machine`` span of the source it quotes."""


@dataclass(frozen=True)
class Mismatch:
    """A published span or figure that differs from what its source gives."""

    where: str
    what: str

    def __str__(self) -> str:
        return f"{self.where}: {self.what}"


def pages(root: Path) -> list[Path]:
    """The published pages under ``root``, in a stable order."""
    return sorted(path for pattern in PAGES for path in root.glob(pattern))


def render_page(text: str, page: Path, root: Path, sources: dict[str, Source | JsonSource]) -> str:
    """``text`` with every span rewritten from its source (loaded into ``sources`` once)."""

    def render(match: re.Match[str]) -> str:
        name, kind = match["source"], match["kind"]
        if kind not in KINDS:
            raise ValueError(f"{page}: unknown published kind {kind!r}; allowed: "
                             f"{', '.join(KINDS)}")
        if name not in sources:
            sources[name] = load_source(root, name)
        link = Path(os.path.relpath(root / FIGURES / sources[name].slug, page.parent)).as_posix()
        generated = KINDS[kind](sources[name], match["args"].split(), link)
        return f"<!-- published {name} {kind}{match['args']} -->{generated}<!-- /published -->"

    return SPAN.sub(render, text)


def stray_machines(text: str, known: tuple[str, ...]) -> list[str]:
    """The machine names ``text`` mentions outside its published spans."""
    outside = SPAN.sub("", text)
    return [name for name in known if re.search(rf"\b{re.escape(name)}\b", outside)]


def publish(root: Path, check: bool = False) -> list[Mismatch]:
    """Rewrite (or with ``check``, compare) every span and figure under ``root``; the list of
    what differed (empty when the pages already agree with their sources)."""
    root = root.resolve()
    sources: dict[str, Source | JsonSource] = {}
    found: list[Mismatch] = []
    for page in pages(root):
        where = str(page.relative_to(root))
        text = page.read_text()
        rendered = render_page(text, page, root, sources)
        if rendered != text:
            found += [Mismatch(where, f"span {short(old)} differs from its source's {short(new)}")
                      for old, new in changed_spans(text, rendered)]
            if not check:
                page.write_text(rendered)
        if where not in UNCHECKED_MACHINES:
            found += [Mismatch(where, f"names the machine {name!r} outside a published span "
                                      f"(quote it: <!-- published SOURCE machine -->)")
                      for name in stray_machines(text, MACHINES)]
    return found + figures(root, sources, check)


def short(text: str, width: int = 100) -> str:
    """A span's text for a message: quoted, and cut to ``width`` characters."""
    shown = repr(text)
    return shown if len(shown) <= width else shown[:width - 5] + "...'"


def changed_spans(old: str, new: str) -> list[tuple[str, str]]:
    """The (old, new) text of each span that differs between two renderings of a page."""
    return [(a["text"], b["text"]) for a, b in zip(SPAN.finditer(old), SPAN.finditer(new))
            if a["text"] != b["text"]]


def figures(root: Path, sources: dict[str, Source | JsonSource], check: bool) -> list[Mismatch]:
    """Each figure a span shows, drawn anew from its source and compared byte for byte with
    the committed one (written in its place unless ``check``); a committed figure no span
    shows is stale."""
    found: list[Mismatch] = []
    wanted = {(source.slug, figure): source.drawn[figure]
              for source in sources.values() for figure in source.figures}
    for (slug, figure), path in sorted(wanted.items()):
        drawn = path.read_bytes()
        committed = root / FIGURES / slug / figure
        if committed.exists() and committed.read_bytes() == drawn:
            continue
        found.append(Mismatch(str(committed.relative_to(root)),
                              "differs from the figure its source draws"))
        if not check:
            committed.parent.mkdir(parents=True, exist_ok=True)
            committed.write_bytes(drawn)
    for committed in sorted((root / FIGURES).glob("*/*")):
        if (committed.parent.name, committed.name) not in wanted:
            found.append(Mismatch(str(committed.relative_to(root)), "no page shows it"))
            if not check:
                committed.unlink()
    return found


def main(argv: list[str] | None = None) -> int:
    """``python -m diffbench.results.published [--check] [ROOT]``: 0 when every span and
    figure agrees with its source (after rewriting them, without ``--check``), 1 otherwise."""
    args = sys.argv[1:] if argv is None else argv
    check = "--check" in args
    roots = [a for a in args if a != "--check"]
    found = publish(Path(roots[0] if roots else "."), check=check)
    for mismatch in found:
        print(mismatch, file=sys.stderr)
    if check and found:
        print(f"{len(found)} published span(s) or figure(s) differ from their sources; "
              f"`nox -s publish` rewrites them", file=sys.stderr)
        return 1
    print(f"published: {len(found)} span(s) or figure(s) rewritten" if found else
          "published: every span and figure agrees with its source")
    return 0


__all__ = ["FIGURES", "SOURCES", "Mismatch", "publish", "render_page", "stray_machines"]


if __name__ == "__main__":
    sys.exit(main())
