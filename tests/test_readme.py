"""The README's example runs as written and prints what its comments promise."""

from __future__ import annotations

import contextlib
import io
import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs():
    text = README.read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "README.md has no python example"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(blocks[0], "README.md", "exec"), {"__name__": "readme"})
    lines = out.getvalue().splitlines()
    assert lines[1] == "bits sent up per worker: 105600"  # 300 rounds × 11 float32 values
    f_gap, bits_up, rounds = lines[2].split()
    assert float(f_gap) < 1e-5 and int(bits_up) == 2000 * 352 and int(rounds) == 2000
