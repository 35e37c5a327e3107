"""Rendering comparison results: the image grid, the Markdown table and the plots."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import torch
from PIL import Image, ImageDraw
from torch import Tensor

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


COLUMNS = [
    ("name", "system", "{}"),
    ("strength", "strength", "{:.2f}"),
    ("start_timestep", "start t", "{}"),
    ("steps", "NFE", "{}"),
    ("sec_per_image", "s / image", "{:.4f}"),
    ("mse", "MSE", "{:.4f}"),
    ("psnr", "PSNR dB", "{:.2f}"),
    ("ssim", "SSIM", "{:.3f}"),
    ("preservation", "preservation", "{:.3f}"),
    ("preservation_ceiling", "ceiling", "{:.3f}"),
    ("frechet_distance", "Frechet", "{:.2f}"),
    ("train_seconds", "train s", "{:.0f}"),
]


def markdown_table(results: list[dict[str, Any]]) -> str:
    """The results as a Markdown table, one row per (system, strength)."""
    lines = [
        "| " + " | ".join(title for _, title, _ in COLUMNS) + " |",
        "|" + "|".join(" --- " for _ in COLUMNS) + "|",
    ]
    for result in results:
        cells = [fmt.format(result[key]) for key, _, fmt in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_pareto(results: list[dict[str, Any]], path: str | Path) -> None:
    """Fidelity (MSE) against latency, one point per system and strength."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for strength in sorted({r["strength"] for r in results}):
        points = [r for r in results if r["strength"] == strength]
        ax.scatter([r["sec_per_image"] for r in points], [r["mse"] for r in points],
                   label=f"strength {strength:g}")
        for r in points:
            ax.annotate(r["name"], (r["sec_per_image"], r["mse"]), fontsize=7,
                        xytext=(4, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("seconds per image (median, log scale)")
    ax.set_ylabel("MSE to the source digit (lower is better)")
    ax.set_title("Fidelity against latency")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_strength(results: list[dict[str, Any]], path: str | Path) -> None:
    """MSE and preservation against strength per system, the preservation ceiling dashed."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    names = list(dict.fromkeys(r["name"] for r in results))
    for name in names:
        rows = sorted((r for r in results if r["name"] == name), key=lambda r: r["strength"])
        strengths = [r["strength"] for r in rows]
        left.plot(strengths, [r["mse"] for r in rows], marker="o", label=name)
        right.plot(strengths, [r["preservation"] for r in rows], marker="o", label=name)
    ceiling = {}
    for r in results:
        ceiling.setdefault(r["strength"], r["preservation_ceiling"])
    right.plot(sorted(ceiling), [ceiling[s] for s in sorted(ceiling)], "k--", label="ceiling")
    left.set(xlabel="strength", ylabel="MSE", title="MSE against strength")
    right.set(xlabel="strength", ylabel="preservation", title="Class preservation")
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
        counts.setdefault((r["space"], r["sampler"], r["strength"]), set()).add(r["steps"])
    return any(len(nfes) > 1 for nfes in counts.values())


def plot_nfe(results: list[dict[str, Any]], path: str | Path) -> None:
    """MSE and preservation against network evaluations (NFE, log scale), one line per sampler
    (and space, strength); single points (e.g. DDPM-1000) as stars; the noised accuracy at each
    strength dashed (every run starts from the same timestep there)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.4))
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault((r["space"], r["sampler"], r["strength"]), []).append(r)
    for (space, sampler, strength), rows in groups.items():
        rows.sort(key=lambda r: r["steps"])
        label = f"{'LDM-' if space == 'latent' else ''}{sampler} s{strength:g}"
        style = {"marker": "o"} if len(rows) > 1 else {"marker": "*", "markersize": 12}
        nfe = [r["steps"] for r in rows]
        left.plot(nfe, [r["mse"] for r in rows], label=label, **style)
        right.plot(nfe, [r["preservation"] for r in rows], label=label, **style)
    for strength in sorted({r["strength"] for r in results}):
        accuracy = next(r["preservation_ceiling"] for r in results if r["strength"] == strength)
        right.axhline(accuracy, color="k", linestyle="--", linewidth=1,
                      label=f"noised accuracy s{strength:g}")
    left.set(xlabel="network evaluations (NFE)", ylabel="MSE", title="MSE against NFE")
    right.set(xlabel="network evaluations (NFE)", ylabel="preservation",
              title="Class preservation against NFE")
    for ax in (left, right):
        ax.set_xscale("log")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
