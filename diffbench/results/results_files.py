"""A comparison's files, rebuilt from its rows on disk: results.json, results.md (with the
systems that failed first), the grid and the plots (``diffbench compare``, ``report`` and
``merge`` write them)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from diffbench.core.errors import InputError
from diffbench.core.files import write_atomic_text
from diffbench.io.config import CompareConfig
from diffbench.measure.feature_distance import FrechetReference
from diffbench.measure.nfe import fewest_nfe, fewest_nfe_markdown
from diffbench.measure.versus import attach_paired
from diffbench.results.plots import plot_nfe, plot_pareto, plot_strength, sweeps_nfe
from diffbench.results.report import GridBlock, markdown_table, render_grid
from diffbench.results.row import make_row, upgrade
from diffbench.results.rowstore import RowStore, per_digit_scores

GRID_INPUTS = "grid_inputs"
"""The row store's extra tensors: the grid's source and noised columns."""
DEFAULT_REFERENCE = CompareConfig.model_fields["reference"].default
"""The reference of a run whose run.json names none: the config's default, stated there."""
FRECHET_REFERENCE = "frechet_reference"
"""The run's Frechet reference on its principal components (mean, cov), for paired figures."""


def write_reports(
    store: RowStore, reference: str | None = None, out: str | Path | None = None
) -> tuple[list[dict[str, Any]], list[Path]]:
    """results.json, results.md, the grid and the plots, rebuilt from the rows on disk (of a
    finished, partial or killed run) into ``out`` (default: the run's folder), with the paired
    figures against ``reference`` (default: the run's)."""
    run = store.run()
    stored = [upgrade(row) for row in store.rows()]
    kept = [i for i, row in enumerate(stored) if not row.get("failure")]  # failed: no figures
    results = [stored[i] for i in kept]
    tensors = [store.tensors(i) for i in kept]  # each row's file, read once
    for i, found in zip(kept, tensors):
        if "outputs" not in found:
            raise InputError(f"{store.out}/rows/{i}.safetensors holds no outputs; allowed: "
                             f"the row tensors `diffbench compare` writes")
    per_digit = [per_digit_scores(t) for t in tensors]
    moments, _ = store.load_extra(FRECHET_REFERENCE)
    frechet = FrechetReference(moments["mean"], moments["cov"]) if moments else None
    attach_paired(results, per_digit, reference or run.get("reference", DEFAULT_REFERENCE),
                  run.get("seed", 0), frechet)
    results = [make_row(**row) for row in results]  # the paired figures checked too
    inputs, titles = store.load_extra(GRID_INPUTS)
    blocks = []
    for strength in store.strengths():
        key = f"noised_{strength:g}"
        rows = [i for i, r in enumerate(results)
                if r["view"] == "equal_strength" and r["strength"] == strength]
        if key not in inputs or not rows:
            continue
        blocks.append(GridBlock(
            title=f"strength {strength:g}",
            labels=["source", titles[key], *(results[i]["name"] for i in rows)],
            columns=[inputs["sources"], inputs[key],
                     *(tensors[i]["outputs"] for i in rows)],
        ))
    paired = dict(zip(kept, results))
    results = [paired.get(i, row) for i, row in enumerate(stored)]  # in the order measured
    missing = missing_rows(run.get("planned", []), stored)
    return results, write_results(Path(out or store.out), store.strengths(), results, blocks,
                                  missing)


def missing_rows(planned: list[dict[str, Any]],
                 stored: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of the run's plan (``run.json``'s ``planned``: name, view and strength, None
    for an equal-information row) that no stored row answers: what a killed or partial run has
    yet to measure."""
    found = {(r.get("name"), r.get("view"),
              None if r.get("view") == "equal_information" else r.get("strength"))
             for r in stored}
    return [row for row in planned if (row["name"], row["view"], row["strength"]) not in found]


def write_results(
    out: Path, strengths: list[float], results: list[dict[str, Any]], blocks: list[GridBlock],
    missing: list[dict[str, Any]] = (),
) -> list[Path]:
    """The files of a comparison, each written atomically or whole; failed rows are in
    results.json and results.md's failures, not in the tables and plots; planned rows not on
    disk (``missing``) head results.md."""
    out.mkdir(parents=True, exist_ok=True)
    files = [
        write_atomic_text(out / "results.json", json.dumps(results, indent=2) + "\n"),
        write_atomic_text(out / "results.md", missing_markdown(missing)
                          + results_markdown(results)),
        out / "pareto.png",
    ]
    results = [r for r in results if not r.get("failure")]
    plot_pareto(results, files[2])
    if blocks:
        files.append(out / "i2i_comparison.png")
        render_grid(blocks, files[-1])
    if len(strengths) > 1:
        files.append(out / "fidelity_vs_strength.png")
        plot_strength([r for r in results if r["view"] == "equal_strength"], files[-1])
    for view, name in (("equal_strength", "fidelity_vs_nfe.png"),
                       ("equal_snr", "fidelity_vs_nfe_equal_snr.png")):
        rows = [r for r in results if r["view"] == view]
        if rows and sweeps_nfe(rows):
            files.append(out / name)
            plot_nfe(rows, files[-1])
    return files


def results_markdown(results: list[dict[str, Any]]) -> str:
    """The systems that failed (when any), the equal-strength table, then (when there are
    any) the equal-information one."""
    failed = [r for r in results if r.get("failure")]
    results = [r for r in results if not r.get("failure")]
    text = failures_markdown(failed)
    text += markdown_table([r for r in results if r["view"] == "equal_strength"])
    if sweeps_nfe(results):
        text += "\n" + fewest_nfe_markdown(fewest_nfe(results))
    matched = [r for r in results if r["view"] == "equal_information"]
    if matched:
        text += (f"\n## Equal information: noised accuracy {matched[0]['match_information']:g} "
                 f"in each system's own space\n\n" + markdown_table(matched))
    same_snr = [r for r in results if r["view"] == "equal_snr"]
    if same_snr:
        text += ("\n## Equal SNR: each system where its input is as noisy as a VP input at "
                 "t = int(strength * 1000) - 1\n\n" + markdown_table(same_snr))
        if sweeps_nfe(same_snr):
            text += "\n" + fewest_nfe_markdown(fewest_nfe(results, view="equal_snr"))
    return text


def failures_markdown(failed: list[dict[str, Any]]) -> str:
    """A section naming each failed system: where it stopped, at which step, on which digits."""
    if not failed:
        return ""
    lines = ["## Failed systems", "", "| system | view | strength | failure | step | digits |",
             "| --- | --- | --- | --- | --- | --- |"]
    for row in failed:
        digits = row.get("failure_digits") or []
        shown = ", ".join(map(str, digits[:8])) + (", ..." if len(digits) > 8 else "")
        step = "" if row.get("failure_step") is None else str(row["failure_step"])
        lines.append(f"| {row['name']} | {row['view']} | {row['strength']:g} | "
                     f"{row['failure']} | {step} | {shown} ({len(digits)}) |")
    return "\n".join(lines) + "\n\n"


def missing_markdown(missing: list[dict[str, Any]]) -> str:
    """The planned rows not measured (a partial run), as a list ahead of the tables."""
    if not missing:
        return ""
    lines = [f"## Not measured: {len(missing)} planned row(s)", "",
             "This run stopped before these rows (`diffbench compare --resume` measures them):",
             ""]
    lines += [f"- {row['name']}, {row['view']}"
              + ("" if row["strength"] is None else f", strength {row['strength']:g}")
              for row in missing]
    return "\n".join(lines) + "\n\n"
