"""The comparison's plots: fidelity against latency, against strength and against network
evaluations. Every figure with an interval is drawn with it (95% intervals for fidelity, the
range of the timed calls for latency), references and thresholds are labelled where they are
drawn, legends sit outside the data, and only a sweep of three or more points is joined by a
line (two points are shown as two, not as a measured line between them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

from diffbench.measure.nfe import MSE_TOLERANCE, PRESERVATION_TOLERANCE, REFERENCE, reference_row
from diffbench.measure.versus import level

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the file-only backend)

MARKERS = "osD^v<>pXh"
"""One marker per line, so that lines lying on one another stay told apart."""
SAVE = {"metadata": {"Software": None}, "bbox_inches": "tight"}
"""PNG options: no version stamp (a figure changes only with its data) and the outside
legend kept in the picture."""


def error_bars(rows: list[dict[str, Any]], key: str) -> list[list[float]] | None:
    """Matplotlib's asymmetric ``yerr`` ([below], [above]) from the rows' ``<key>_ci95``."""
    if not all(r.get(f"{key}_ci95") for r in rows):
        return None
    return [[r[key] - r[f"{key}_ci95"][0] for r in rows],
            [r[f"{key}_ci95"][1] - r[key] for r in rows]]


def latency_bars(rows: list[dict[str, Any]]) -> list[list[float]] | None:
    """The timed calls' range around each median latency (fastest to slowest call)."""
    if not all(r.get("sec_per_image_min") and r.get("sec_per_image_max") for r in rows):
        return None
    return [[r["sec_per_image"] - r["sec_per_image_min"] for r in rows],
            [r["sec_per_image_max"] - r["sec_per_image"] for r in rows]]


def legend_outside(ax: Any, **kwargs: Any) -> None:
    """The axes' legend to the right of the data, never over it."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=7,
              **kwargs)


def view_label(row: dict[str, Any]) -> str:
    view = row.get("view", "equal_strength")
    if view == "equal_strength":
        return f"strength {row['strength']:g}"
    if view == "equal_snr":
        return f"SNR of VP strength {row['match_snr_of_strength']:g}"
    return f"noised accuracy {row['match_information']:g}"


def plot_pareto(results: list[dict[str, Any]], path: str | Path) -> None:
    """Fidelity (MSE, with its 95% interval) against latency (median, with the range of the
    timed calls), one point per system and strength (and per equal-information row)."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    at_strength = {(r["name"], r.get("start_timestep")) for r in results
                   if r.get("view", "equal_strength") == "equal_strength"}
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in results:  # a row of another view that starts where its equal-strength row did
        if r.get("view", "equal_strength") == "equal_strength" \
                or (r["name"], r.get("start_timestep")) not in at_strength:  # is drawn once
            groups.setdefault(view_label(r), []).append(r)
    for (label, points), marker in zip(groups.items(), MARKERS):
        ax.errorbar([r["sec_per_image"] for r in points], [r["mse"] for r in points],
                    xerr=latency_bars(points), yerr=error_bars(points, "mse"), fmt=marker,
                    capsize=3, label=label)
        for r in points:
            ax.annotate(r["name"], (r["sec_per_image"], r["mse"]), fontsize=7,
                        xytext=(4, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("seconds per image (median; bars: fastest to slowest timed call; log scale)")
    ax.set_ylabel("MSE to the source digit\n(lower is better; bars: 95% interval)")
    ax.set_title("Fidelity against latency")
    legend_outside(ax)
    ax.grid(alpha=0.3, which="both")
    fig.savefig(path, dpi=120, **SAVE)
    plt.close(fig)


def plot_strength(results: list[dict[str, Any]], path: str | Path) -> None:
    """MSE and preservation against strength per system, with 95% intervals; dashed, the noised
    accuracy of each space (its noise-aware classifier on x_t at the start timestep: how much
    identity the noise left, an estimate, not a bound)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    names = list(dict.fromkeys(r["name"] for r in results))
    noised: dict[str, list[dict[str, Any]]] = {}
    for name, marker in zip(names, MARKERS * 4):
        rows = sorted((r for r in results if r["name"] == name), key=lambda r: r["strength"])
        strengths = [r["strength"] for r in rows]
        style = {"marker": marker, "capsize": 3, "label": name,
                 "linestyle": "-" if len(rows) > 2 else "none"}
        left.errorbar(strengths, [r["mse"] for r in rows], yerr=error_bars(rows, "mse"), **style)
        right.errorbar(strengths, [r["preservation"] for r in rows],
                       yerr=error_bars(rows, "preservation"), **style)
        noised.setdefault(rows[0].get("noised_space", rows[0]["space"]), rows)
    for space, rows in noised.items():
        right.errorbar([r["strength"] for r in rows], [r["noised_accuracy"] for r in rows],
                       yerr=error_bars(rows, "noised_accuracy"), color="k", capsize=3,
                       marker="_", linestyle="--" if len(rows) > 2 else "none",
                       label=f"noised accuracy, {space} (an estimate, not a bound)")
    left.set(xlabel="strength", ylabel="MSE (95% interval)", title="MSE against strength")
    right.set(xlabel="strength", ylabel="preservation (95% interval)",
              title="Class preservation")
    left.grid(alpha=0.3)
    right.grid(alpha=0.3)
    legend_outside(right)
    fig.savefig(path, dpi=120, **SAVE)
    plt.close(fig)


def sweeps_nfe(results: list[dict[str, Any]]) -> bool:
    """Whether some sampler runs at several network-evaluation counts (an NFE sweep)."""
    counts: dict[tuple, set[int]] = {}
    for r in results:
        counts.setdefault((r["space"], r["sampler"], level(r)), set()).add(r["nfe"])
    return any(len(nfes) > 1 for nfes in counts.values())


def nfe_lines(top: Any, bottom: Any, here: list[dict[str, Any]]) -> None:
    """One sampler a marker: MSE (top) and preservation (bottom) against NFE with their 95%
    intervals, joined only along a sweep of three or more points; a run of every timestep
    from the start (DDPM-1000: NFE = t_start + 1) and single points as stars."""
    samplers = list(dict.fromkeys(r["sampler"] for r in here))
    for sampler, marker in zip(samplers, MARKERS * 4):
        rows = sorted((r for r in here if r["sampler"] == sampler), key=lambda r: r["nfe"])
        style = {"marker": marker, "capsize": 2, "markersize": 5,
                 "label": rows[0]["name"] if len(rows) == 1 else sampler,
                 "linestyle": "-" if len(rows) > 2 else "none"}
        nfe = [r["nfe"] for r in rows]
        drawn = top.errorbar(nfe, [r["mse"] for r in rows], yerr=error_bars(rows, "mse"),
                             **style)
        bottom.errorbar(nfe, [r["preservation"] for r in rows],
                        yerr=error_bars(rows, "preservation"), **style)
        for r in rows:
            if len(rows) == 1 or r["nfe"] == r.get("start_timestep", -2) + 1:
                star = {"marker": "*", "markersize": 13, "color": drawn[0].get_color()}
                top.plot([r["nfe"]], [r["mse"]], **star)
                bottom.plot([r["nfe"]], [r["preservation"]], **star)
                top.annotate(r["name"], (r["nfe"], r["mse"]), fontsize=7,
                             xytext=(-10, 6), textcoords="offset points")


def thresholds(top: Any, bottom: Any, here: list[dict[str, Any]]) -> None:
    """The matching bounds against the column's DDIM-50 (MSE + 5%, preservation - 1 point:
    :mod:`diffbench.measure.nfe`) and the noised accuracy, each labelled on its line."""
    reference = reference_row(here)
    lines = []
    if reference is not None:
        lines += [(top, reference["mse"] * (1 + MSE_TOLERANCE), ":",
                   f"{REFERENCE} MSE + {MSE_TOLERANCE:.0%}"),
                  (bottom, reference["preservation"] - PRESERVATION_TOLERANCE, ":",
                   f"{REFERENCE} preservation - {PRESERVATION_TOLERANCE:g}")]
    if here[0].get("noised_accuracy") is not None:
        lines.append((bottom, here[0]["noised_accuracy"], "--",
                      "noised accuracy at the start (not a bound)"))
    for ax, y, style, label in lines:
        ax.axhline(y, color="grey", linestyle=style, linewidth=1)
        ax.annotate(label, (0.01, y), xycoords=("axes fraction", "data"), fontsize=6,
                    color="dimgrey", xytext=(0, 2), textcoords="offset points")


def plot_nfe(results: list[dict[str, Any]], path: str | Path) -> None:
    """MSE (top) and preservation (bottom) against network evaluations (NFE, log scale), one
    column per (space, strength), one marker per sampler, with their 95% intervals and the
    matching thresholds labelled on their lines."""
    panels = list(dict.fromkeys((r["space"], level(r)) for r in results))
    fig, axes = plt.subplots(2, len(panels), figsize=(4.2 * len(panels) + 1.5, 7),
                             squeeze=False)
    for column, (space, strength) in enumerate(panels):
        top, bottom = axes[0][column], axes[1][column]
        here = [r for r in results if (r["space"], level(r)) == (space, strength)]
        nfe_lines(top, bottom, here)
        thresholds(top, bottom, here)
        title = f"{space}, strength {strength:g} (t = {here[0].get('start_timestep', '?')})"
        if here[0].get("view") == "equal_snr":
            title = f"{space}, SNR of t = {here[0]['matched_timestep']} (strength {strength:g})"
        top.set(title=title, ylabel="MSE (95% interval)")
        bottom.set(xlabel="network evaluations (NFE, log scale)",
                   ylabel="preservation (95% interval)")
        for ax in (top, bottom):
            ax.set_xscale("log")
            ax.grid(alpha=0.3, which="both")
    handles: dict[str, Any] = {}
    for ax in axes[1]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    fig.tight_layout()
    fig.legend(list(handles.values()), list(handles), loc="center left", fontsize=7,
               bbox_to_anchor=(1.0, 0.5))
    fig.savefig(path, dpi=100, **SAVE)
    plt.close(fig)
