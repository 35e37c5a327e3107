"""Rendering comparison results: the image grid and the Markdown table (the plots:
:mod:`diffbench.results.plots`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw
from torch import Tensor

from diffbench.results.row import COLUMNS as ROW_COLUMNS

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


def markdown_table(results: list[dict[str, Any]], keys: list[str] | None = None) -> str:
    """The results as a Markdown table, one row per (system, strength); 95% intervals in
    brackets, latency as the median (s / image) and the 90th and 99th percentiles; ``keys``:
    only these columns, in this order (an unknown one is an error naming the allowed)."""
    columns = COLUMNS
    if keys is not None:
        known = {key: (key, title, fmt) for key, title, fmt in COLUMNS}
        unknown = [key for key in keys if key not in known]
        if unknown:
            raise ValueError(f"unknown column(s) {unknown}; allowed: {', '.join(known)}")
        columns = [known[key] for key in keys]
    lines = [
        "| " + " | ".join(title for _, title, _ in columns) + " |",
        "|" + "|".join(" --- " for _ in columns) + "|",
    ]
    for result in results:
        cells = [cell(result, key, fmt) for key, _, fmt in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
