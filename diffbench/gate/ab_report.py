"""What ``diffbench ab`` reports: each case's two verdicts joined, the terminal lines, ``ab.md``,
and the exit status.

Exit statuses, one meaning each:

* 0: certified: every case's speed ``same`` or ``faster`` and fidelity ``identical``, ``same``,
  ``better`` (or not scored: no image output);
* 1: a regression: a case ``slower`` or ``worse``, or one the head cannot run;
* 2: bad input (the CLI's ``error:`` line);
* 3: no verdict: a fidelity still undecided, no comparable case, an unfinished run, or a crash.

The timing fails a case only in a run whose control read ``same``: a control that did not (its
interval too wide, or biased) marks the run's timing invalid, and it is reported, not trusted;
the work counts, which do not depend on the machine, certify the speed all the same.
"""

from __future__ import annotations

from typing import Any

from diffbench.gate import ab_fidelity, work_count
from diffbench.measure import paired

EXIT_CERTIFIED, EXIT_REGRESSION, EXIT_NO_VERDICT = 0, 1, 3
SPEED_PASSES = ("same", "faster")


def thresholds() -> dict[str, Any]:
    """Every threshold both verdicts use, recorded in ``ab.json``."""
    return {"speed": {"level": paired.LEVEL, "same_band": paired.SAME_BAND,
                      "slower_bound": paired.SLOWER_BOUND, "min_rounds": paired.MIN_ROUNDS,
                      "max_rounds": paired.MAX_ROUNDS, "count_limit": work_count.LIMIT},
            "fidelity": {"level": ab_fidelity.LEVEL, "digits": ab_fidelity.DIGITS,
                         "float_tolerance": ab_fidelity.FLOAT_TOLERANCE,
                         "mse_worse": ab_fidelity.MSE_WORSE, "mse_same": ab_fidelity.MSE_SAME,
                         "preservation_worse": ab_fidelity.PRESERVATION_WORSE,
                         "preservation_same": ab_fidelity.PRESERVATION_SAME}}


def cost_rank(name: str) -> tuple[int, str]:
    """Slow cases first: training, then latent, then batch 16, then the rest."""
    order = ("train-", "img2img-latent", "-b16")
    return next((i for i, part in enumerate(order) if part in name), len(order)), name


def speed_verdict(work: dict[str, Any] | None, time: dict[str, Any] | None,
                  timing_trusted: bool) -> str:
    """A case's speed from its work counts and (when timed) its timing: ``slower`` when the
    counts say so, or the timing does in a run whose control read ``same``; otherwise the
    counts' verdict, which certifies (a timing that cannot decide within its rounds, or one of
    a run whose control could not vouch for its workers, is reported); without counts, the
    timing's."""
    if any(e is not None and e["verdict"] == "not comparable" for e in (work, time)):
        return "not comparable"
    if work is not None and work["verdict"] == "slower":
        return "slower"
    if time is not None and time["verdict"] == "slower" and timing_trusted:
        return "slower"
    found = [e["verdict"] for e in (work, time) if e is not None]
    return found[0] if found else "not measured"


def timing_trusted(control: dict[str, Any] | None) -> bool:
    """Whether a run's timing may fail a case: its control, the same code in both versions'
    workers, read ``same`` (a run with no timed case has no control and needs none)."""
    return control is None or control["verdict"] == "same"


def join(names: list[str], work: list[dict[str, Any]], time: list[dict[str, Any]],
         fidelity: dict[str, dict[str, Any]], control: dict[str, Any] | None = None
         ) -> list[dict[str, Any]]:
    """One entry per case measured so far: its speed verdict, and its ``work``, ``time`` and
    ``fidelity`` entries."""
    by_work, by_time = {e["case"]: e for e in work}, {e["case"]: e for e in time}
    trusted = timing_trusted(control)
    entries = []
    for name in names:
        if name not in by_work and name not in fidelity:
            continue
        parts = {"work": by_work.get(name), "time": by_time.get(name)}
        errors = {label: message for part in parts.values() if part
                  for label, message in part.get("error", {}).items()}
        entries.append({"case": name, "verdict": speed_verdict(*parts.values(), trusted),
                        **parts, **({"error": errors} if errors else {}),
                        "fidelity": fidelity.get(name, {"verdict": "not measured"})})
    return entries


def interval(entry: dict[str, Any], key: str) -> str:
    lo, hi = entry[key]
    return f"[{lo:.3f}, {hi:.3f}]"


def time_text(entry: dict[str, Any]) -> str:
    if entry["verdict"] == "not comparable":
        return f"not comparable: {entry['error']}"
    return (f"time {entry['verdict']} {entry['ratio']:.3f} {interval(entry, 'ci99')} 99%, "
            f"{entry['processes']} worker pairs x {entry['rounds']}")


def speed_text(entry: dict[str, Any]) -> str:
    """The speed verdict with the work counts' ratios and the timing's interval."""
    parts = []
    if entry.get("work") and "ratios" in entry["work"]:
        ratios = ", ".join(f"{kind.split('_')[1]} {entry['work']['ratios'][kind]:.4f}"
                           for kind in work_count.KINDS)
        parts.append(f"work {entry['work']['verdict']}: {ratios}")
    if entry.get("time"):
        parts.append(time_text(entry["time"]))
    if entry.get("error"):
        parts.append(f"cannot run: {entry['error']}")
    return f"{entry['verdict']} ({'; '.join(parts)})"


def fidelity_text(entry: dict[str, Any]) -> str:
    found = entry["verdict"]
    if "mse_ratio" in entry:
        return (f"{found} (MSE {entry['mse_ratio']:.3f} {interval(entry, 'mse_ratio_ci99')}, "
                f"preservation {entry['preservation_difference'] * 100:+.1f} points "
                f"[{entry['preservation_difference_ci99'][0] * 100:+.1f}, "
                f"{entry['preservation_difference_ci99'][1] * 100:+.1f}], "
                f"{entry['digits']} digits)")
    if found == "identical":
        return f"identical ({'bit for bit' if entry['bitwise'] else 'within float tolerance'})"
    why = entry.get("reason") or entry.get("error")
    return f"{found}: {why}" if why else found


def case_line(entry: dict[str, Any]) -> str:
    """``PASS``/``FAIL``/``UNDECIDED``, the case, both verdicts."""
    return (f"{case_outcome(entry):<9} {entry['case']}: speed {speed_text(entry)}; fidelity "
            f"{fidelity_text(entry['fidelity'])}")


def control_text(control: dict[str, Any]) -> str:
    return time_text(control)


def case_outcome(entry: dict[str, Any]) -> str:
    speed, fidelity = entry["verdict"], entry["fidelity"]["verdict"]
    head_fails = "head" in (entry.get("error") or {}) or "head" in (
        entry["fidelity"].get("error") or {})
    if speed == "slower" or fidelity == "worse" or head_fails:
        return "FAIL"
    if speed == "not comparable" or fidelity == "not comparable":
        return "NEW"  # the base cannot run it: nothing to compare
    if speed in SPEED_PASSES and ab_fidelity.passes(fidelity):
        return "PASS"
    return "UNDECIDED"


def exit_status(result: dict[str, Any]) -> tuple[int, str]:
    """(status, the ``error:`` line's text; empty when certified)."""
    cases = result["cases"]
    outcomes = {e["case"]: case_outcome(e) for e in cases}
    failed = [name for name, found in outcomes.items() if found == "FAIL"]
    if failed:
        return EXIT_REGRESSION, f"regression in {', '.join(failed)} (slower or worse)"
    undecided = [name for name, found in outcomes.items() if found == "UNDECIDED"]
    if undecided:
        return EXIT_NO_VERDICT, f"no verdict for {', '.join(undecided)} within its rounds"
    if not any(found == "PASS" for found in outcomes.values()):
        return EXIT_NO_VERDICT, "no case could be compared (the base can run none of them)"
    if not result.get("complete", False):
        return EXIT_NO_VERDICT, "the run did not finish"
    return EXIT_CERTIFIED, ""


def markdown(result: dict[str, Any]) -> str:
    head = result["head"]
    lines = [
        f"# diffbench ab: head {head['commit'][:10]}"
        f"{' + uncommitted changes' if head['dirty'] else ''} against base "
        f"{result['base']['commit'][:10]}",
        "",
        f"Seed {result['seed']}, {result['threads']} thread(s), {result['processes']} worker "
        f"pairs, {result['seconds']:.0f} s. Speed: head / base, by work counts (limit "
        f"±{work_count.LIMIT:.0%}: bytecode, tensor operators, tensor bytes) "
        f"and by time (99% Student-t interval over worker pairs; same "
        f"within ±{paired.SAME_BAND:.0%}). Fidelity: the same {ab_fidelity.DIGITS} digits and "
        f"seeds in both versions, paired 99% intervals.",
        "",
        "| case | outcome | speed | fidelity |",
        "| --- | --- | --- | --- |",
    ]
    lines += [f"| {e['case']} | {case_outcome(e)} | {speed_text(e)} | "
              f"{fidelity_text(e['fidelity'])} |" for e in result["cases"]]
    if result.get("control"):
        trust = ("its timing may fail a case" if timing_trusted(result["control"]) else
                 "not same: this run's timing is reported, not trusted")
        lines += ["", f"Control workload (same code in every worker): "
                      f"{control_text(result['control'])}; {trust}."]
    return "\n".join(lines) + "\n"
