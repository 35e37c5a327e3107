"""nox sessions. Each installs the project with its dev extras into a reused virtualenv.

A torch environment is ~6 GB; to skip building one per session, run the sessions inside an
environment you already prepared (`pip install -e ".[dev,parity]"`): `nox --no-venv -s tests`.
"""

import nox

nox.options.sessions = ["tests", "lint"]
nox.options.reuse_venv = "yes"

DEV = ".[dev,parity]"


@nox.session
def tests(session: nox.Session) -> None:
    """Unit, property and integration tests."""
    session.install("-e", DEV)
    session.run("pytest", "-q", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: lint and import order."""
    session.install("ruff")
    session.run("ruff", "check", "diffbench", "tests", "noxfile.py")
