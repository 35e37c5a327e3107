"""The fidelity regression gate: measured fidelity against a baseline kept in the repository.

A case fails when its MSE rose by more than ``mse_rel`` (relative) plus ``mse_abs`` (absolute),
or its preservation fell by more than ``preservation_abs``. The messages name the case and both
numbers; a measured value that is not a number fails too. Timing regressions: ``diffbench ab``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from diffbench.core.errors import InputError
from diffbench.core.files import write_atomic_text


@dataclass(frozen=True)
class Tolerance:
    mse_rel: float = 0.10
    mse_abs: float = 0.002
    preservation_abs: float = 0.035

    def __str__(self) -> str:
        return (f"mse may rise by {self.mse_rel:.0%} + {self.mse_abs}, preservation may fall by "
                f"{self.preservation_abs}")


def check_case(
    case: str, measured: dict[str, float], baseline: dict[str, float], tolerance: Tolerance
) -> list[str]:
    """The regressions of one case (empty when it is within tolerance)."""
    problems = []
    mse_limit = baseline["mse"] * (1 + tolerance.mse_rel) + tolerance.mse_abs
    if not math.isfinite(measured["mse"]):  # NaN compares false with every limit
        problems.append(f"{case}: mse is {measured['mse']} (not a number); the baseline is "
                        f"{baseline['mse']:.5f}")
    elif measured["mse"] > mse_limit:
        problems.append(
            f"{case}: mse {measured['mse']:.5f} is worse than the baseline {baseline['mse']:.5f} "
            f"(limit {mse_limit:.5f})"
        )
    floor = baseline["preservation"] - tolerance.preservation_abs
    if not math.isfinite(measured["preservation"]):
        problems.append(f"{case}: preservation is {measured['preservation']} (not a number)")
    elif measured["preservation"] < floor:
        problems.append(
            f"{case}: preservation {measured['preservation']:.4f} is worse than the baseline "
            f"{baseline['preservation']:.4f} (limit {floor:.4f})"
        )
    return problems


def _finite_number(value: object) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


class BaselineError(InputError):
    """The baseline file is missing or unreadable: the gate cannot check anything."""


RECORD_HINT = "pytest <benches> {select}--diffbench-update-fidelity-baseline"  # the plugin option


class FidelityBaseline:
    """Case name -> {"mse", "preservation"}, stored as JSON. It fails closed: a missing or
    unreadable file is a :class:`BaselineError` (unless ``create=True``, for recording a new
    one), and a case it does not know is a failure naming the command that records it."""

    def __init__(
        self, path: str | Path, tolerance: Tolerance = Tolerance(), create: bool = False
    ) -> None:
        self.path = Path(path)
        self.tolerance = tolerance
        self.cases: dict[str, dict[str, float]] = {}
        if create and not self.path.exists():
            return
        try:
            cases = json.loads(self.path.read_text())
            if not isinstance(cases, dict) or not all(
                isinstance(v, dict) and {"mse", "preservation"} <= set(v) for v in cases.values()
            ):
                raise ValueError('expected {"case": {"mse": ..., "preservation": ...}, ...}')
            for case, entry in cases.items():  # NaN compares false with every limit: fail closed
                for key in ("mse", "preservation"):
                    if not _finite_number(entry[key]):
                        raise ValueError(f"{case}: {key} is {entry[key]!r}, not a finite number")
        except (OSError, ValueError) as error:
            raise BaselineError(
                f"fidelity baseline {self.path} cannot be read ({error}); record one with "
                f"`{RECORD_HINT.format(select='')}`"
            ) from None
        self.cases = cases

    def check(self, case: str, measured: dict[str, float]) -> list[str]:
        """Regressions of ``case``, or the missing entry as one."""
        if case not in self.cases:
            select = f"-k '{case}' "
            return [f"{case}: no entry in the fidelity baseline {self.path}; record one with "
                    f"`{RECORD_HINT.format(select=select)}`"]
        return check_case(case, measured, self.cases[case], self.tolerance)

    def record(self, case: str, measured: dict[str, float]) -> None:
        """Keep ``case``'s measurement as its baseline; a non-finite one is an error, never
        written (it would pass every later measurement)."""
        for key in ("mse", "preservation"):
            if not _finite_number(measured[key]):
                raise InputError(f"cannot record {case}: its {key} is {measured[key]!r}; "
                                 f"allowed: a finite number")
        self.cases[case] = {"mse": measured["mse"], "preservation": measured["preservation"]}

    def save(self) -> Path:
        text = json.dumps(dict(sorted(self.cases.items())), indent=2) + "\n"
        return write_atomic_text(self.path, text)
