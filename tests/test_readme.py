"""The README's Python code runs as written."""

import re
from pathlib import Path

import numpy as np

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run_as_written():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks, "the README has no Python example"
    namespace: dict = {}
    for code in blocks:
        exec(compile(code, str(README), "exec"), namespace)  # noqa: S102 - our own README
    out = namespace["out"]
    # The library example's prediction is finite and each expert reports its solve.
    assert np.all(np.isfinite(np.asarray(out.u)))
    assert out.weights.shape[0] == np.asarray(out.solution.status).shape[0] == 4
