"""What a published span can quote from a committed pytest-benchmark JSON (the benches'
reference run, ``benches/reference/cpu.json``): one benchmark's figure with its interval, the
number of cases, and the image-to-image cases as a table (:mod:`diffbench.results.published`
places them)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from diffbench.results.quotes import JsonSource, options


def benchmark(source: JsonSource, name: str) -> dict[str, Any]:
    """The benchmark ``name`` of the run (``test_ddim_against_ddpm[cpu]``)."""
    for found in source.run["benchmarks"]:
        if found["name"] == name:
            return found
    raise ValueError(f"{source.folder} has no benchmark {name!r}")


def figure(found: dict[str, Any], key: str) -> Any:
    """A benchmark's ``extra_info`` figure, or one of its timing statistics (``median``)."""
    if key in found["extra_info"]:
        return found["extra_info"][key]
    return found["stats"][key]


def quote_bench(source: JsonSource, args: list[str], _: str) -> str:
    """``NAME KEY [interval] [format=...]``: one benchmark's figure, with ``interval`` its 95%
    interval (``KEY_ci95_lo``, ``KEY_ci95_hi``) in brackets."""
    words, keys = options(args)
    found = benchmark(source, words[0])
    fmt = keys.get("format", "{:.2f}")
    text = fmt.format(figure(found, words[1]))
    if "interval" in words[2:]:
        bounds = (figure(found, f"{words[1]}_ci95_{end}") for end in ("lo", "hi"))
        text += " [" + ", ".join(fmt.format(b) for b in bounds) + "]"
    return text


def quote_count(source: JsonSource, args: list[str], _: str) -> str:
    """``[match=TEXT]``: how many benchmarks the run holds (whose name contains TEXT)."""
    _, keys = options(args)
    return str(sum(keys.get("match", "") in b["name"] for b in source.run["benchmarks"]))


def interval_cell(extra: dict[str, Any], key: str, fmt: str) -> str:
    if key not in extra:
        return ""
    bounds = extra.get(f"{key}_ci95") or []
    return fmt.format(extra[key]) + (" [" + ", ".join(fmt.format(b) for b in bounds) + "]"
                                     if bounds else "")


def quote_benchmarks(source: JsonSource, args: list[str], _: str) -> str:
    """``[match=TEXT]``: the benchmarks (whose name contains TEXT) as a table: median time,
    per image, images/s, start timestep, NFE, fidelity with its 95% intervals."""
    _, keys = options(args)
    lines = ["| benchmark | median s | s / image | images/s | start t | NFE | mse [95% CI] | "
             "preservation [95% CI] | noised acc. |", "|" + " --- |" * 9]
    for found in source.run["benchmarks"]:
        if keys.get("match", "") not in found["name"]:
            continue
        extra, median = found["extra_info"], found["stats"]["median"]
        batch = extra.get("batch", 1)
        cells = [f"`{found['name']}`", f"{median:.4f}", f"{median / batch:.4f}",
                 f"{batch / median:.1f}", str(extra.get("start_timestep", "")),
                 str(extra.get("nfe", "")), interval_cell(extra, "mse", "{:.4f}"),
                 interval_cell(extra, "preservation", "{:.3f}"),
                 "" if "noised_accuracy" not in extra else f"{extra['noised_accuracy']:.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n\n" + "\n".join(lines) + "\n\n"


KINDS: dict[str, Callable[[Any, list[str], str], str]] = {
    "bench": quote_bench, "count": quote_count, "benchmarks": quote_benchmarks,
}
"""The kinds of span a pytest-benchmark JSON answers (beside ``field`` and ``machine``)."""
