"""nox sessions. Each installs the project with its dev extras into a reused virtualenv.

A torch environment is ~6 GB; to skip building one per session, run the sessions inside an
environment you already prepared (`pip install -c constraints.txt -e ".[dev,parity]"`):
`nox --no-venv -s tests`. Sessions install with constraints.txt, the measured versions.

Benchmarks save their JSON under .benchmarks/ (pytest-benchmark's storage), keyed by commit.
`ab` is the regression gate CI enforces: the base named in benches/ab-base against this tree,
speed and fidelity, in one job (`diffbench ab`). `bench-compare` holds a new run
against a saved one, allowing each case its measured noise: a report across machines and time.
"""

import sys
from pathlib import Path

import nox

nox.options.sessions = ["tests", "lint"]
nox.options.reuse_venv = "yes"

DEV = ".[dev,parity]"
CONSTRAINTS = ("-c", "constraints.txt")  # the versions the published numbers were measured with


def install(session: nox.Session, *args: str) -> None:
    """Install into the session's virtualenv; with --no-venv the prepared env is used as is."""
    if session.venv_backend != "none":
        session.install(*args)


def tool(session: nox.Session, name: str) -> str:
    """``name`` from the session's virtualenv, or with --no-venv from the one nox runs in."""
    return name if session.venv_backend != "none" else str(Path(sys.executable).parent / name)


@nox.session
def tests(session: nox.Session) -> None:
    """Unit, property and integration tests."""
    install(session, *CONSTRAINTS, "-e", DEV)
    session.run(tool(session, "pytest"), "-q", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff (lint and import order), and the layer contracts of pyproject.toml (import-linter:
    a module imports only from its own layer or below)."""
    install(session, "ruff", "import-linter")
    session.run(tool(session, "ruff"), "check", "diffbench", "tests", "benches", "noxfile.py")
    session.run(tool(session, "lint-imports"), "--no-cache")


@nox.session
def benches(session: nox.Session) -> None:
    """The full benchmark suite on the shipped checkpoints; saves its JSON and histograms."""
    install(session, *CONSTRAINTS, "-e", DEV)
    session.run(tool(session, "pytest"), "benches", "--benchmark-autosave",
                "--benchmark-histogram=.benchmarks/histogram/benches", *session.posargs)


@nox.session(name="benches-quick")
def benches_quick(session: nox.Session) -> None:
    """The CI subset (minutes): latency, fidelity gate, saved JSON."""
    install(session, *CONSTRAINTS, "-e", DEV)
    session.run(tool(session, "pytest"), "benches", "-m", "quick", "--benchmark-autosave",
                *session.posargs)


@nox.session(name="benches-peer")
def benches_peer(session: nox.Session) -> None:
    """The opt-in group: diffbench against the diffusers peer (needs its checkpoint)."""
    install(session, *CONSTRAINTS, "-e", DEV)
    session.run(tool(session, "pytest"), "benches", "-m", "peer", "--benchmark-autosave",
                *session.posargs)


@nox.session(name="bench-compare")
def bench_compare(session: nox.Session) -> None:
    """Run the suite again and hold it against a saved run (diffbench.gate.benchgate): a report,
    exit status 1 on a slowdown beyond each case's measured noise."""
    install(session, *CONSTRAINTS, "-e", DEV)
    new = Path(session.create_tmp()) / "bench-compare.json"  # not under .benchmarks/
    session.run(tool(session, "pytest"), "benches", f"--benchmark-json={new}", *session.posargs)
    session.run(tool(session, "python"), "-m", "diffbench.gate.benchgate", str(new))


@nox.session
def ab(session: nox.Session) -> None:
    """The regression gate: benches/ab-base against the working tree, quick cases (or the args
    after --, e.g. -- --cases all --budget-s 900)."""
    install(session, *CONSTRAINTS, "-e", DEV)
    lines = Path("benches/ab-base").read_text().splitlines()
    base = next(line.strip() for line in lines if line.strip() and not line.startswith("#"))
    session.run(tool(session, "diffbench"), "ab", "--base", base, "--out", "results/ab",
                *(session.posargs or ["--cases", "quick"]))


@nox.session
def history(session: nox.Session) -> None:
    """Each saved benchmark's median over commits, with change points: results/history.png."""
    install(session, *CONSTRAINTS, "-e", DEV)
    session.run(tool(session, "diffbench"), "history", *session.posargs)


@nox.session(venv_backend="none")
def gpu(session: nox.Session) -> None:
    """The CUDA checks of a GPU lease: benches/gpu.sh (args after --, e.g. -- --dry-run)."""
    session.run("bash", "benches/gpu.sh", *session.posargs, external=True)


@nox.session
def publish(session: nox.Session) -> None:
    """The docs' published numbers and figures, rewritten from their committed sources in
    published/ (`-- --check` only compares: a hand edit or a stale figure fails)."""
    install(session, *CONSTRAINTS, "-e", ".")  # the figures' bytes follow matplotlib's version
    session.run(tool(session, "python"), "-m", "diffbench.results.published", *session.posargs)


@nox.session
def docs(session: nox.Session) -> None:
    """The docs site (MkDocs with Material, the API reference by mkdocstrings) in strict mode:
    a broken link or a docstring it cannot render fails it."""
    install(session, *CONSTRAINTS, "mkdocs", "mkdocs-material", "mkdocstrings-python", "ruff")
    session.run(tool(session, "mkdocs"), "build", "--strict", "--site-dir",
                str(Path(session.create_tmp()) / "site"))
