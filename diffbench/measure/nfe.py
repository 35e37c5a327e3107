"""The NFE sweep's answer: at each strength, the fewest network evaluations (NFE) at which each
sampler matches DDIM-50's fidelity, from the rows of one comparison.

"Matches" is the NFE sweep's rule: MSE no more than 5% above the reference's and class preservation
no more than 1 point below it, on at least 512 digits (fewer are flagged, not hidden). Where a
row carries its paired figures against the reference (:mod:`diffbench.measure.versus`: the same
digits, resampled together), each is judged at its 95% interval's bound, a non-inferiority test: the
upper bound of the relative MSE difference at most +5%, the lower bound of the preservation
difference at least -1 point. Rows without them (older results) are judged at the point. Only the
NFE the sweep ran are searched, so "fewest" means the fewest of those; a sampler whose fidelity
is not monotone in NFE can match at a few NFE and miss at more, and the table shows both. MSE
and preservation reward a smooth estimate of the source (one step from t_start returns the
network's x0 prediction, the mean of what the digit could have been), so the table also shows
each match's Frechet distance, which does not, and the fewest NFE whose match is also as sharp:
its paired Frechet difference to the reference (the same digits' half-samples) not resolved
above 0.
"""

from __future__ import annotations

from typing import Any

from diffbench.measure.versus import level

REFERENCE = "DDIM-50"
"""The system every sampler is matched against, in each space (``LDM-DDIM-50`` in latents)."""
MSE_TOLERANCE = 0.05
"""A match's MSE may exceed the reference's by this fraction."""
PRESERVATION_TOLERANCE = 0.01
"""A match's preservation may trail the reference's by this much (1 point)."""
MIN_DIGITS = 512
"""Digits per row the rule asks for; a row scored on fewer is flagged."""


def matches(row: dict[str, Any], reference: dict[str, Any]) -> bool:
    """Whether ``row`` is as faithful as ``reference`` within the tolerances above: at the
    bounds of its paired intervals against ``reference`` when it has them, else at the point
    estimates. The reference matches itself."""
    if row is reference:
        return True
    if row.get("vs_reference") == reference["name"]:
        return (row["mse_vs_reference_ci95"][1] <= MSE_TOLERANCE
                and row["preservation_vs_reference_ci95"][0] >= -PRESERVATION_TOLERANCE)
    return (row["mse"] <= reference["mse"] * (1 + MSE_TOLERANCE)
            and row["preservation"] >= reference["preservation"] - PRESERVATION_TOLERANCE)


def sharp_as(row: dict[str, Any], reference: dict[str, Any]) -> bool:
    """Whether ``row`` is not shown less like real digits than ``reference``: the lower bound of
    its paired Frechet difference against it is at most 0 (``False`` without that figure). The
    reference is as sharp as itself."""
    if row is reference:
        return True
    interval = row.get("frechet_vs_reference_ci95")
    return row.get("vs_reference") == reference["name"] and interval is not None and (
        interval[0] <= 0)


def reference_row(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The DDIM-50 row among ``rows`` (one space and strength), or ``None``."""
    return next((r for r in rows if r["sampler"] == "ddim" and r["name"].endswith(REFERENCE)),
                None)


def fewest_nfe(results: list[dict[str, Any]], view: str = "equal_strength") -> list[dict[str, Any]]:
    """One entry per (space, strength, sampler) of the ``view``'s rows whose space and
    strength (:func:`level`) have a DDIM-50 row: the reference, every NFE tested, those that
    match, the fewest that match (``None`` when none does), and the fewest that match with a
    paired Frechet difference not resolved above the reference's (:func:`sharp_as`). With
    ``view="equal_snr"`` every network is matched where its input is
    as noisy as DDIM-50's."""
    rows = [r for r in results if r.get("view", "equal_strength") == view]
    answers = []
    for space, strength in dict.fromkeys((r["space"], level(r)) for r in rows):
        here = [r for r in rows if r["space"] == space and level(r) == strength]
        reference = reference_row(here)
        if reference is None:
            continue
        for sampler in dict.fromkeys(r["sampler"] for r in here):
            runs = sorted((r for r in here if r["sampler"] == sampler), key=lambda r: r["nfe"])
            matching = [r for r in runs if matches(r, reference)]
            best = matching[0] if matching else None
            sharp = [r for r in matching if sharp_as(r, reference)]
            answers.append({
                "space": space, "strength": strength, "sampler": sampler, "view": view,
                "reference": reference["name"], "reference_nfe": reference["nfe"],
                "reference_mse": reference["mse"],
                "reference_preservation": reference["preservation"],
                "reference_frechet_distance": reference.get("frechet_distance"),
                "tested_nfe": [r["nfe"] for r in runs],
                "matching_nfe": [r["nfe"] for r in matching],
                "fewest_nfe": best["nfe"] if best else None,
                "name": best["name"] if best else None,
                "mse": best["mse"] if best else None,
                "preservation": best["preservation"] if best else None,
                "frechet_distance": best.get("frechet_distance") if best else None,
                "fewest_nfe_as_sharp": sharp[0]["nfe"] if sharp else None,
                "num_images": min(r["num_images"] for r in [reference, *runs]),
            })
    return answers


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def fewest_nfe_markdown(answers: list[dict[str, Any]]) -> str:
    """The answers as a Markdown section: one table per (space, strength), the winner first."""
    if not answers:
        return ""
    title = "" if answers[0].get("view", "equal_strength") == "equal_strength" else ", equal SNR"
    lines = [f"## Fewest NFE matching {REFERENCE}{title}",
             "", f"A match: MSE <= {REFERENCE}'s x {1 + MSE_TOLERANCE:g} and preservation >= "
             f"{REFERENCE}'s - {PRESERVATION_TOLERANCE:g}, among the NFE each sampler ran; "
             f"judged at the bounds of the paired 95% intervals where rows have them.", ""]
    for space, strength in dict.fromkeys((a["space"], a["strength"]) for a in answers):
        group = [a for a in answers if a["space"] == space and a["strength"] == strength]
        ref = group[0]
        found = [a for a in group if a["fewest_nfe"] is not None]
        winner = min(found, key=lambda a: a["fewest_nfe"]) if found else None
        fewest = (f"**{winner['fewest_nfe']} NFE** ("
                  + ", ".join(a["name"] for a in found if a["fewest_nfe"] == winner["fewest_nfe"])
                  + ")") if winner else "no sampler matches"
        digits = min(a["num_images"] for a in group)
        note = "" if digits >= MIN_DIGITS else f" (only {digits} digits: below {MIN_DIGITS})"
        lines += [f"### {space}, strength {strength:g}: {fewest}",
                  "", f"Reference {ref['reference']}: {ref['reference_nfe']} NFE, MSE "
                  f"{ref['reference_mse']:.4f}, preservation {ref['reference_preservation']:.3f}, "
                  f"Frechet {_number(ref['reference_frechet_distance'])}; {digits} digits{note}.",
                  "", "| sampler | fewest matching NFE | MSE | preservation | Frechet | "
                  "fewest matching NFE not resolved less sharp (paired Frechet) | "
                  "matching / tested NFE |", "| --- | --- | --- | --- | --- | --- | --- |"]
        for a in group:
            cells = ([str(a["fewest_nfe"]), f"{a['mse']:.4f}", f"{a['preservation']:.3f}",
                      _number(a["frechet_distance"])]
                     if a["fewest_nfe"] is not None else ["none", "", "", ""])
            cells.append("none" if a["fewest_nfe_as_sharp"] is None else
                         str(a["fewest_nfe_as_sharp"]))
            tested = f"{a['matching_nfe']} / {a['tested_nfe']}"
            lines.append(f"| {a['sampler']} | " + " | ".join(cells) + f" | {tested} |")
        lines.append("")
    return "\n".join(lines)
