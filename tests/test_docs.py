"""Every Python code block in README.md and docs/*.md runs as written.

A page's ```python blocks run in order, in one namespace, in a fresh interpreter whose working
folder is an empty temporary one (as a reader following the page would). A block that cannot
run here is marked on the line just before its fence with a visible reason:

    <!-- not run by tests/test_docs.py: needs a CUDA GPU -->
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SKIP_MARK = "<!-- not run by tests/test_docs.py:"
_FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[\w+-]*)[^\n]*$")
# Pages whose blocks train or export real models (a few seconds each).
SLOW_PAGES = {"guide-pytorch.md", "custom-operators.md", "guide-gradient-boosting.md", "guide-to-torch.md",
              "guide-generation.md",
              "notebook.md"}


def python_blocks(text: str) -> list[tuple[int, str, str | None]]:
    """(line number, code, skip reason or None) for each ```python block of a Markdown page."""
    lines = text.splitlines()
    blocks: list[tuple[int, str, str | None]] = []
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, lang, start = match["indent"], match["lang"].lower(), i
        body: list[str] = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith("```"):
            body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i])
            i += 1
        i += 1  # the closing fence
        if lang not in ("python", "py"):
            continue
        before = lines[start - 1].strip() if start else ""
        reason = before[len(SKIP_MARK):].removesuffix("-->").strip() if before.startswith(
            SKIP_MARK) else None
        blocks.append((start + 1, textwrap.dedent("\n".join(body)), reason))
    return blocks


def _pages_with_code() -> list[object]:
    params: list[object] = []
    for page in PAGES:
        if not python_blocks(page.read_text(encoding="utf-8")):
            continue
        marks = [pytest.mark.slow] if page.name in SLOW_PAGES else []
        params.append(pytest.param(page, id=page.name, marks=marks))
    return params


# Blocks marked with this in their reason need TensorFlow or JAX: `nox -s frameworks` runs them
# (test_framework_pages_run), the main suite cannot (TensorFlow and torch crash in one process).
FRAMEWORKS_SESSION = "nox -s frameworks"


def _program(page: Path, *, framework_blocks: bool = False) -> str:
    """One script running the page's blocks in order in one namespace, naming the failing one."""
    parts = ["import sys, traceback", "namespace = {'__name__': '__main__'}"]
    for line, code, reason in python_blocks(page.read_text(encoding="utf-8")):
        if reason is not None and not (framework_blocks and FRAMEWORKS_SESSION in reason):
            continue
        label = f"{page.name}:{line}"
        parts.append(
            "try:\n"
            f"    exec(compile({code!r}, {label!r}, 'exec'), namespace)\n"
            "except BaseException:\n"
            f"    print('--- the code block at {label} failed:', file=sys.stderr)\n"
            "    traceback.print_exc()\n"
            "    sys.exit(1)"
        )
    return "\n".join(parts) + "\n"


def test_blocks_are_found() -> None:
    text = "x\n```python\na = 1\n```\n<!-- not run by tests/test_docs.py: needs a GPU -->\n" \
           "```python\nb = 2\n```\n```bash\nls\n```\n  ```python\n  c = 3\n  ```\n"
    assert python_blocks(text) == [(2, "a = 1", None), (6, "b = 2", "needs a GPU"),
                                   (12, "c = 3", None)]


def test_skipped_blocks_are_rare() -> None:
    reasons = [(page.name, line, reason) for page in PAGES
               for line, _, reason in python_blocks(page.read_text(encoding="utf-8"))
               if reason is not None]
    assert all(reason for _, _, reason in reasons), f"a skip marker without a reason: {reasons}"
    not_run = [r for r in reasons if FRAMEWORKS_SESSION not in r[2]]
    assert len(not_run) <= 3, f"too many code blocks not run: {not_run}"


@pytest.mark.parametrize("page", _pages_with_code())
def test_page_code_runs(page: Path, tmp_path: Path) -> None:
    _run_page(page, tmp_path, framework_blocks=False)


def _framework_pages() -> list[object]:
    return [pytest.param(page, id=page.name) for page in PAGES
            if any(reason and FRAMEWORKS_SESSION in reason
                   for _, _, reason in python_blocks(page.read_text(encoding="utf-8")))]


@pytest.mark.parametrize("page", _framework_pages())
def test_framework_pages_run(page: Path, tmp_path: Path) -> None:
    """The pages whose blocks need TensorFlow or JAX, whole, in `nox -s frameworks`."""
    import os

    if os.environ.get("ONNXBRIDGE_REQUIRE_FRAMEWORKS") != "1":
        pytest.skip(f"needs TensorFlow/JAX in their own process: {FRAMEWORKS_SESSION}")
    _run_page(page, tmp_path, framework_blocks=True)


def _run_page(page: Path, tmp_path: Path, *, framework_blocks: bool) -> None:
    script = tmp_path / "page.py"
    script.write_text(_program(page, framework_blocks=framework_blocks), encoding="utf-8")
    work = tmp_path / "work"
    work.mkdir()
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          cwd=work, timeout=600, env=_env())
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-6000:]


def _env() -> dict[str, str]:
    import os

    env = dict(os.environ)
    # Not measured by coverage (patch = ["subprocess"]): the guides' code costs a quarter more
    # CPU under it, and what it runs is measured where the tests call it.
    env.pop("COVERAGE_PROCESS_CONFIG", None)
    env["MPLBACKEND"] = "Agg"
    env.setdefault("ONNXBRIDGE_PROVIDERS", "cpu")
    return env
