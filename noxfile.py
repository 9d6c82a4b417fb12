"""Developer tasks: `nox -s tests`, `nox -s lint`, `nox -s typecheck`, `nox -s bench`, `nox -s docs`."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True

EXAMPLE_PLUGIN = "examples/onnxbridge-numpy-poly"


@nox.session
def tests(session: nox.Session) -> None:
    """Install everything the tests need from scratch and run the whole suite (slow tests too)."""
    session.install("-e", ".[test]")
    session.install("-e", EXAMPLE_PLUGIN)
    args = session.posargs or ["-n", "2", "--durations=15"]
    session.run("pytest", *args)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.6")
    session.run("ruff", "check", "onnxbridge", "tests", "benchmarks", "examples", "noxfile.py")


@nox.session
def typecheck(session: nox.Session) -> None:
    session.install("-e", ".", "mypy>=1.10")
    session.run("mypy")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site into site/ with warnings as errors (mkdocs.yml)."""
    session.install("-e", ".[docs]")
    session.run("mkdocs", "build", "--strict", "--site-dir", "site", *session.posargs,
                env={"NO_MKDOCS_2_WARNING": "1"})


@nox.session
def bench(session: nox.Session) -> None:
    """Run every benchmark under benchmarks/ (each prints ratios measured side by side)."""
    session.install("-e", ".[all]")
    session.run("python", "benchmarks/run_all.py", *session.posargs)
