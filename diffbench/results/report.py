"""Rendering comparison results: the image grid, the Markdown table and the plots."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import torch
from PIL import Image, ImageDraw
from torch import Tensor

from diffbench.measure.nfe import MSE_TOLERANCE, PRESERVATION_TOLERANCE, REFERENCE, reference_row
from diffbench.measure.versus import level
from diffbench.results.row import COLUMNS as ROW_COLUMNS

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the file-only backend)

CELL = 88  # pixels per grid cell: a 28x28 digit scaled 3x, plus 4 px of padding
HEADER = 36  # pixels above each block: its title and column labels
GAP = 16  # pixels between blocks


@dataclass(frozen=True)
class GridBlock:
    """One strength's block: a title and labelled columns of digits [N, 1, 28, 28] in [-1, 1]."""

    title: str
    labels: list[str]
    columns: list[Tensor]


def grid_size(blocks: list[GridBlock]) -> tuple[int, int]:
    """(width, height) in pixels of the grid `render_grid` draws."""
    rows = max(len(column) for block in blocks for column in block.columns)
    width = sum(len(block.columns) * CELL for block in blocks) + GAP * (len(blocks) - 1)
    return width, HEADER + rows * CELL


def render_grid(blocks: list[GridBlock], path: str | Path) -> tuple[int, int]:
    """Blocks side by side; in each, one row per source digit and one labelled column per image
    kind (source, noised, each system). Returns the grid's (rows, columns of digits)."""
    canvas = Image.new("L", grid_size(blocks), color=255)
    draw = ImageDraw.Draw(canvas)
    x = 0
    for block in blocks:
        draw.text((x + 4, 2), block.title, fill=0)
        for label, column in zip(block.labels, block.columns):
            draw.text((x + 4, HEADER - 14), label, fill=0)
            pixels = ((column.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()
            for row, digit in enumerate(pixels):
                tile = Image.fromarray(digit[0].numpy()).resize((CELL - 4, CELL - 4), Image.NEAREST)
                canvas.paste(tile, (x + 2, HEADER + row * CELL + 2))
            x += CELL
        x += GAP
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    rows = max(len(column) for block in blocks for column in block.columns)
    return rows, sum(len(block.columns) for block in blocks)


COLUMNS = [(key, title, fmt) for key, title, fmt, *_ in ROW_COLUMNS]
"""(row key, column title, format), from the row's fields (:data:`diffbench.results.row.COLUMNS`);
a figure with a ``<key>_ci95`` shows it as [lo, hi]."""
SCALES = {key: scale[0] for key, _, _, *scale in ROW_COLUMNS if scale}
"""Columns shown in another unit than the row's (peak memory: bytes shown in MiB)."""


def cell(row: dict[str, Any], key: str, fmt: str) -> str:
    """``row[key]`` formatted, followed by its 95% interval when the row has one."""
    value, scale = row.get(key), SCALES.get(key, 1)
    if value is None:
        return "n/a"
    text = fmt.format(value * scale if key in SCALES else value)
    interval = row.get(f"{key}_ci95")
    if interval is not None:
        text += " [" + ", ".join(fmt.format(bound * scale) for bound in interval) + "]"
    if key.endswith("_vs_reference"):
        resolved = row["vs_reference_resolved"][key.removesuffix("_vs_reference")]
        text += " resolved" if resolved else " not resolved"
    return text


def markdown_table(results: list[dict[str, Any]]) -> str:
    """The results as a Markdown table, one row per (system, strength); 95% intervals in
    brackets, latency as the median (s / image) and the 90th and 99th percentiles."""
    lines = [
        "| " + " | ".join(title for _, title, _ in COLUMNS) + " |",
        "|" + "|".join(" --- " for _ in COLUMNS) + "|",
    ]
    for result in results:
        cells = [cell(result, key, fmt) for key, _, fmt in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def error_bars(rows: list[dict[str, Any]], key: str) -> list[list[float]] | None:
    """Matplotlib's asymmetric ``yerr`` ([below], [above]) from the rows' ``<key>_ci95``."""
    if not all(f"{key}_ci95" in r for r in rows):
        return None
    return [[r[key] - r[f"{key}_ci95"][0] for r in rows],
            [r[f"{key}_ci95"][1] - r[key] for r in rows]]


def plot_pareto(results: list[dict[str, Any]], path: str | Path) -> None:
    """Fidelity (MSE, with its 95% interval) against latency, one point per system and
    strength (and per equal-information row)."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        view = r.get("view", "equal_strength")
        label = (f"strength {r['strength']:g}" if view == "equal_strength"
                 else f"SNR of VP strength {r['match_snr_of_strength']:g}" if view == "equal_snr"
                 else f"noised accuracy {r['match_information']:g}")
        groups.setdefault(label, []).append(r)
    for label, points in groups.items():
        ax.errorbar([r["sec_per_image"] for r in points], [r["mse"] for r in points],
                    yerr=error_bars(points, "mse"), fmt="o", capsize=3, label=label)
        for r in points:
            ax.annotate(r["name"], (r["sec_per_image"], r["mse"]), fontsize=7,
                        xytext=(4, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("seconds per image (median, log scale)")
    ax.set_ylabel("MSE to the source digit (lower is better; 95% interval)")
    ax.set_title("Fidelity against latency")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_strength(results: list[dict[str, Any]], path: str | Path) -> None:
    """MSE and preservation against strength per system, with 95% intervals; dashed, the noised
    accuracy of each space (its noise-aware classifier on x_t at the start timestep)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    names = list(dict.fromkeys(r["name"] for r in results))
    noised: dict[str, list[dict[str, Any]]] = {}
    for name in names:
        rows = sorted((r for r in results if r["name"] == name), key=lambda r: r["strength"])
        strengths = [r["strength"] for r in rows]
        left.errorbar(strengths, [r["mse"] for r in rows], yerr=error_bars(rows, "mse"),
                      marker="o", capsize=3, label=name)
        right.errorbar(strengths, [r["preservation"] for r in rows],
                       yerr=error_bars(rows, "preservation"), marker="o", capsize=3, label=name)
        noised.setdefault(rows[0].get("noised_space", rows[0]["space"]), rows)
    for space, rows in noised.items():
        right.errorbar([r["strength"] for r in rows], [r["noised_accuracy"] for r in rows],
                       yerr=error_bars(rows, "noised_accuracy"), fmt="k--" if space == "pixel"
                       else "k:", capsize=3, label=f"noised accuracy ({space})")
    left.set(xlabel="strength", ylabel="MSE (95% interval)", title="MSE against strength")
    right.set(xlabel="strength", ylabel="preservation (95% interval)",
              title="Class preservation")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def sweeps_nfe(results: list[dict[str, Any]]) -> bool:
    """Whether some sampler runs at several network-evaluation counts (an NFE sweep)."""
    counts: dict[tuple, set[int]] = {}
    for r in results:
        counts.setdefault((r["space"], r["sampler"], level(r)), set()).add(r["nfe"])
    return any(len(nfes) > 1 for nfes in counts.values())


def plot_nfe(results: list[dict[str, Any]], path: str | Path) -> None:
    """MSE (top) and preservation (bottom) against network evaluations (NFE, log scale), one
    column per (space, strength), one line per sampler; a run of every timestep from the start
    (DDPM-1000: NFE = t_start + 1) and single points as stars. Where the column has a DDIM-50
    row, dotted lines bound what matches it (MSE + 5%, preservation - 1 point:
    :mod:`diffbench.measure.nfe`); dashed, the ceiling: the space's noised accuracy at the start
    timestep every run of the column shares."""
    panels = list(dict.fromkeys((r["space"], level(r)) for r in results))
    fig, axes = plt.subplots(2, len(panels), figsize=(4.2 * len(panels), 7), squeeze=False)
    for column, (space, strength) in enumerate(panels):
        top, bottom = axes[0][column], axes[1][column]
        here = [r for r in results if (r["space"], level(r)) == (space, strength)]
        for sampler in dict.fromkeys(r["sampler"] for r in here):
            rows = sorted((r for r in here if r["sampler"] == sampler), key=lambda r: r["nfe"])
            label = rows[0]["name"] if len(rows) == 1 else sampler
            nfe = [r["nfe"] for r in rows]
            lines = top.plot(nfe, [r["mse"] for r in rows], marker="o", label=label)
            bottom.plot(nfe, [r["preservation"] for r in rows], marker="o", label=label)
            for r in rows:
                if len(rows) == 1 or r["nfe"] == r.get("start_timestep", -2) + 1:
                    star = {"marker": "*", "markersize": 14, "color": lines[0].get_color()}
                    top.plot([r["nfe"]], [r["mse"]], **star)
                    bottom.plot([r["nfe"]], [r["preservation"]], **star)
                    top.annotate(r["name"], (r["nfe"], r["mse"]), fontsize=7,
                                 xytext=(-10, 6), textcoords="offset points")
        reference = reference_row(here)
        if reference is not None:
            top.axhline(reference["mse"] * (1 + MSE_TOLERANCE), color="grey", linestyle=":",
                        label=f"{REFERENCE} MSE + {MSE_TOLERANCE:.0%}")
            bottom.axhline(reference["preservation"] - PRESERVATION_TOLERANCE, color="grey",
                           linestyle=":", label=f"{REFERENCE} - {PRESERVATION_TOLERANCE:g}")
        if here[0].get("noised_accuracy") is not None:
            bottom.axhline(here[0]["noised_accuracy"], color="k", linestyle="--", linewidth=1,
                           label="ceiling: noised accuracy")
        title = f"{space}, strength {strength:g} (t = {here[0].get('start_timestep', '?')})"
        if here[0].get("view") == "equal_snr":
            title = f"{space}, SNR of t = {here[0]['matched_timestep']} (strength {strength:g})"
        top.set(title=title, ylabel="MSE")
        bottom.set(xlabel="network evaluations (NFE)", ylabel="preservation")
        for ax in (top, bottom):
            ax.set_xscale("log")
            ax.grid(alpha=0.3, which="both")
        bottom.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
