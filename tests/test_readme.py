"""The README's code is run, not just shown."""
from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_routed_model_snippet_prints_gmacs_and_flop_ratio():
    (snippet,) = [b for b in _python_blocks() if "build_model" in b]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(snippet, str(README), "exec"), {})
    printed = out.getvalue()
    assert "kept tokens per routed block: {1: 24, 3: 24, 5: 24, 7: 24, 9: 24, 11: 24}" in printed
    expected = re.search(r"# -> (.*)", snippet).group(1)  # the output the README promises
    assert expected in printed


def test_readme_test_command_is_what_ci_runs():
    ci = (README.parent / ".ci" / "run").read_text()
    assert 'pip install -e ".[test]" && python -m pytest' in README.read_text()
    assert 'pip install -q -e ".[test]"' in ci and "python -m pytest" in ci
