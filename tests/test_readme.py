"""The README's Python code runs as written."""

import re
from pathlib import Path

import numpy as np

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run_as_written(tmp_path, monkeypatch):
    # As from the repository root (examples/ importable), writing into a fresh directory.
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(README.parent))
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks, "the README has no Python example"
    namespace: dict = {}
    for code in blocks:
        exec(compile(code, str(README), "exec"), namespace)  # noqa: S102 - our own README
    out = namespace["out"]
    # The library example's prediction is finite and each expert reports its solve.
    assert np.all(np.isfinite(np.asarray(out.u)))
    assert out.weights.shape[0] == np.asarray(out.solution.status).shape[0] == 4
    # The "your own PDE" example trained a run and returned its model.
    run_dir, model = namespace["run_dir"], namespace["model"]
    assert (run_dir / "checkpoint.eqx").is_file() and model.constraint.pde.viscosity == 0.02
