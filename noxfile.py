"""Developer tasks: `nox -s tests`, `nox -s frameworks`, `nox -s runtime_installs`, `nox -s lint`,
`nox -s typecheck`, `nox -s bench`, `nox -s docs`."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True

EXAMPLE_PLUGIN = "examples/onnxbridge-numpy-poly"


# Branch coverage of onnxbridge by the whole suite, rounded down: raise it when coverage rises,
# never lower it (docs/testing.md).
COVERAGE_FLOOR = 89.0  # branch coverage; only rises (89.30% on 2026-11-28, round 4, subprocesses counted)


@nox.session
def tests(session: nox.Session) -> None:
    """Install everything the tests need from scratch and run the whole suite (slow tests too),
    with branch coverage that must stay at or above COVERAGE_FLOOR."""
    session.install("-e", ".[test]")
    session.install("-e", EXAMPLE_PLUGIN)
    # --dist loadgroup: the tests marked xdist_group("spark"/"ray") share one engine start.
    args = session.posargs or ["-n", "2", "--dist", "loadgroup", "--durations=15",
                               "--cov=onnxbridge", "--cov-branch", "--cov-report=term",
                               f"--cov-fail-under={COVERAGE_FLOOR}"]
    # The example plugin is installed just above: its tests must run, and fail if it is missing.
    # ONNXBRIDGE_REQUIRE_TEST_EXTRA: what the test extra installs (keras) must be there.
    session.run("pytest", *args, env={"ONNXBRIDGE_REQUIRE_EXAMPLE_PLUGIN": "1",
                                      "ONNXBRIDGE_REQUIRE_TEST_EXTRA": "1"})


@nox.session
def mutation(session: nox.Session) -> None:
    """Mutation testing of _files, io, verify, registry and runtime/ ([tool.mutmut] in
    pyproject.toml); slow, so not run by .ci/run. Narrow it with mutant names:
    `nox -s mutation -- "onnxbridge.verify*"`; `mutmut results` lists the survivors."""
    session.install("-e", ".[test]", "mutmut>=3.3")
    session.run("mutmut", "run", *session.posargs)
    session.run("mutmut", "results")


# The onnxruntime packages `runtime_installs` moves through (pinned so CI sees the same files).
ORT_CPU = "onnxruntime==1.32.0"
ORT_GPU = "onnxruntime-gpu==1.31.1"


@nox.session(reuse_venv=False)
def runtime_installs(session: nox.Session) -> None:
    """onnxbridge with no onnxruntime, with onnxruntime-gpu on a machine without a usable GPU,
    with onnxruntime installed over it, and with one of the two removed: real pip commands on one
    fresh environment, the tests of each state after each (tests/test_install_states.py)."""
    test = ["pytest", "-p", "no:cacheprovider", "tests/test_install_states.py"]
    session.install("-e", ".", "pytest>=8")
    session.install("-e", EXAMPLE_PLUGIN)
    session.run(*test, env={"ONNXBRIDGE_INSTALL_STATE": "none"})
    session.install(ORT_GPU)
    session.run(*test, "tests/test_runtime.py", env={"ONNXBRIDGE_INSTALL_STATE": "gpu"})
    session.install(ORT_CPU)  # what `pip install some-package-that-needs-onnxruntime` does
    session.run(*test, env={"ONNXBRIDGE_INSTALL_STATE": "clash"})
    session.run("python", "-m", "pip", "uninstall", "--yes", "--quiet", "onnxruntime")
    session.run(*test, env={"ONNXBRIDGE_INSTALL_STATE": "broken"})


@nox.session
def frameworks(session: nox.Session) -> None:
    """The Keras (TensorFlow backend), TensorFlow and JAX plugins with their frameworks installed: too heavy
    for every `tests` run, so they get their own session; a missing framework fails it."""
    # Not the whole test extra: TensorFlow and torch in one process crash (docs/guide-keras.md).
    session.install("-e", ".[cpu,keras,tensorflow,jax]", "pytest>=8", "hypothesis>=6.100")
    args = session.posargs or ["tests/test_plugin_keras.py", "tests/test_plugin_tensorflow.py",
                               "tests/test_plugin_jax.py",
                               "tests/test_docs.py::test_framework_pages_run"]
    session.run("pytest", "-p", "no:cacheprovider", *args,
                env={"ONNXBRIDGE_REQUIRE_FRAMEWORKS": "1", "TF_NUM_INTRAOP_THREADS": "1",
                     "TF_NUM_INTEROP_THREADS": "1", "KERAS_BACKEND": "tensorflow"})


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.6")
    session.run("ruff", "check", "onnxbridge", "tests", "benchmarks", "examples", "noxfile.py")


@nox.session
def typecheck(session: nox.Session) -> None:
    session.install("-e", ".[cpu]", "mypy>=1.10")
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
    session.install("-e", ".[all,cpu,spark,ray,dask]")  # spark/ray/dask: bench_scale.py
    session.run("python", "benchmarks/run_all.py", *session.posargs)
