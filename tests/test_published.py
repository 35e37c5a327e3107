"""The published numbers agree with their committed sources, and a hand edit is caught: a
quoted number, a table cell, a figure, a stale figure, a page naming another machine."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from diffbench.results.published import FIGURES, SOURCES, SPAN, pages, publish, stray_machines

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def pages_copy(tmp_path: Path) -> Path:
    """The README, docs pages, figures and sources, copied where a test may edit them."""
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    (tmp_path / "docs").mkdir()
    for page in (ROOT / "docs").glob("*.md"):
        shutil.copy(page, tmp_path / "docs" / page.name)
    shutil.copytree(ROOT / FIGURES, tmp_path / FIGURES)
    shutil.copytree(ROOT / SOURCES, tmp_path / SOURCES)
    for name in {m["source"] for page in pages(ROOT) for m in SPAN.finditer(page.read_text())}:
        if name.endswith(".json"):  # a committed JSON source, by its path in the repository
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(ROOT / name, tmp_path / name)
    return tmp_path


def test_the_committed_pages_agree_with_their_sources() -> None:
    assert [str(m) for m in publish(ROOT, check=True)] == []


def test_a_quoted_number_edited_by_hand_fails_and_publish_restores_it(pages_copy: Path) -> None:
    readme = pages_copy / "README.md"
    text = readme.read_text()
    marker = "<!-- published compare-full value DDIM-50@0.3 mse bare -->"
    quoted = text.split(marker, 1)[1].split("<!--", 1)[0]
    assert quoted.startswith("0.0"), quoted  # a number is quoted there
    edited = f"{float(quoted) + 0.01:.4f}"
    readme.write_text(text.replace(marker + quoted, marker + edited, 1))

    found = publish(pages_copy, check=True)

    assert [m.where for m in found] == ["README.md"]
    assert edited in str(found[0]) and quoted in str(found[0])
    publish(pages_copy)  # rewrites the span from the source
    assert readme.read_text() == text
    assert publish(pages_copy, check=True) == []


def test_a_table_cell_edited_by_hand_fails(pages_copy: Path) -> None:
    page = pages_copy / "docs" / "results.md"
    text = page.read_text()
    table = text.split("<!-- published compare-full table -->", 1)[1].split("<!--", 1)[0]
    row = next(line for line in table.splitlines() if line.startswith("| DDIM-50 |"))
    cells = row.split(" | ")
    cells[6] = "0.0400 [0.0380, 0.0420]"  # the MSE column
    page.write_text(text.replace(row, " | ".join(cells), 1))

    assert [m.where for m in publish(pages_copy, check=True)] == ["docs/results.md"]


def test_an_edited_or_stale_figure_fails(pages_copy: Path) -> None:
    figure = pages_copy / FIGURES / "compare-full" / "pareto.png"
    figure.write_bytes(figure.read_bytes()[:-8] + bytes(8))
    stale = pages_copy / FIGURES / "compare-full" / "fidelity_vs_strength.png"
    stale.write_bytes(b"an old picture")

    found = {m.where: m.what for m in publish(pages_copy, check=True)}

    assert found == {
        "docs/figures/compare-full/pareto.png": "differs from the figure its source draws",
        "docs/figures/compare-full/fidelity_vs_strength.png": "no page shows it",
    }


def test_a_page_naming_another_machine_outside_its_spans_fails(pages_copy: Path) -> None:
    page = pages_copy / "docs" / "results.md"
    page.write_text(page.read_text() + "\nThese latencies were measured on an Intel Xeon.\n")

    found = publish(pages_copy, check=True)

    assert [m.where for m in found] == ["docs/results.md"]
    assert "'Xeon'" in str(found[0])


def test_machine_names_inside_spans_are_the_sources() -> None:
    text = ("measured on <!-- published compare-full machine -->AMD EPYC (2 torch threads)"
            "<!-- /published -->; an H100 run is planned")
    assert stray_machines(text, ("EPYC", "H100", "Xeon")) == ["H100"]
