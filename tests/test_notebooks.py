"""The walkthrough notebooks: each ``.ipynb`` is in sync with its jupytext ``.py`` source, and
each ``.py`` runs top to bottom as a script.

The sync check parses both files with the standard library only (the ``.ipynb`` is JSON, the
``.py`` is jupytext's "percent" format), so it runs without jupytext; when jupytext is installed
a second check compares against ``jupytext.read`` itself. Regenerate a stale notebook with
``jupytext --to ipynb notebooks/<name>.py``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
NAMES = ("ssm_walkthrough", "flowrl_walkthrough", "adarl_walkthrough")

_CELL = re.compile(r"^# %%(.*)$")
# jupytext comments out magics (``!cmd``, ``%magic``) in the .py by one "# " per level.
_ESCAPED_MAGIC = re.compile(r"^# ((?:# )*[!%])")


def _strip_blank(lines: list[str]) -> list[str]:
    while lines and not lines[0].strip():
        lines = lines[1:]
    while lines and not lines[-1].strip():
        lines = lines[:-1]
    return lines


def parse_percent(text: str) -> list[tuple[str, str]]:
    """(cell_type, source) of every cell of a jupytext percent-format script.

    Handles what these notebooks use: the ``# ---`` YAML header, ``# %%`` code cells,
    ``# %% [markdown]`` cells (every line prefixed by ``#``) and escaped magics.
    """
    lines = text.splitlines()
    if lines and lines[0] == "# ---":
        end = lines.index("# ---", 1)
        lines = lines[end + 1 :]
    cells: list[tuple[str, list[str]]] = []
    for line in lines:
        m = _CELL.match(line)
        if m:
            kind = "markdown" if "[markdown]" in m.group(1) else "code"
            cells.append((kind, []))
        elif cells:
            cells[-1][1].append(line)
        elif line.strip():
            raise ValueError(f"text before the first cell marker: {line!r}")
    out = []
    for kind, body in cells:
        body = _strip_blank(body)
        if kind == "markdown":
            body = [ln[2:] if ln.startswith("# ") else ln.lstrip("#") for ln in body]
        else:
            body = [_ESCAPED_MAGIC.sub(r"\1", ln) for ln in body]
        out.append((kind, "\n".join(body)))
    return out


def read_ipynb(path: Path) -> list[tuple[str, str]]:
    nb = json.loads(path.read_text())
    assert nb["nbformat"] == 4
    return [
        (c["cell_type"], "".join(c["source"]) if isinstance(c["source"], list) else c["source"])
        for c in nb["cells"]
    ]


@pytest.mark.parametrize("name", NAMES)
def test_ipynb_in_sync_with_py(name):
    py = parse_percent((NOTEBOOKS / f"{name}.py").read_text())
    nb = read_ipynb(NOTEBOOKS / f"{name}.ipynb")
    hint = f"regenerate: jupytext --to ipynb notebooks/{name}.py"
    assert [k for k, _ in py] == [k for k, _ in nb], f"cell types differ; {hint}"
    for i, ((kind, src_py), (_, src_nb)) in enumerate(zip(py, nb, strict=True)):
        assert src_py == src_nb, f"{kind} cell {i} differs; {hint}"
    code = [src for kind, src in nb if kind == "code"]
    assert len(code) >= 5  # parsing found the cells, not an empty notebook


@pytest.mark.parametrize("name", NAMES)
def test_ipynb_in_sync_with_jupytext_reading_of_py(name):
    jupytext = pytest.importorskip("jupytext")
    from_py = jupytext.read(NOTEBOOKS / f"{name}.py")
    nb = read_ipynb(NOTEBOOKS / f"{name}.ipynb")
    assert [(c.cell_type, c.source) for c in from_py.cells] == nb


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_colab_ready(name):
    """First cell: installs from a repository URL or a wheel only when one is set (GPU switch);
    a cell sets JAX_PLATFORMS only without a GPU."""
    cells = read_ipynb(NOTEBOOKS / f"{name}.ipynb")
    kind, first = cells[0]
    assert kind == "code"
    lines = first.splitlines()
    assert {'REPO_URL = ""', 'WHEEL = ""', "GPU = False"} <= {ln.split("  #")[0] for ln in lines}
    assert "if REPO_URL or WHEEL:" in lines  # nothing is installed by default
    assert "<repo-url>" not in first and "[gpu]" in first
    setup = [src for k, src in cells if k == "code" and "JAX_PLATFORMS" in src]
    assert len(setup) == 1 and 'shutil.which("nvidia-smi") is None' in setup[0]


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_notebook_script_runs(name):
    """Runs ``notebooks/<name>.py`` from the repository root as a script (Agg backend, CPU)."""
    env = {**os.environ, "MPLBACKEND": "Agg", "JAX_PLATFORMS": "cpu"}
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(NOTEBOOKS / f"{name}.py")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, f"{name} failed after {elapsed:.0f} s:\n{proc.stderr[-4000:]}"
    assert "notebook ran in" in proc.stdout
    print(f"{name}: {elapsed:.1f} s")
