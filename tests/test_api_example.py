"""The README's Python API example runs as written (on a micro model folder instead of ``runs/teacher``)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_api_example() -> str:
    text = README.read_text()
    section = text[text.index("## Python API"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.parametrize("folder", ["micro_folder", "micro_student_folder"])
def test_readme_api_example_runs(folder, request, capsys):
    code = readme_api_example()
    assert '"runs/teacher"' in code
    exec(compile(code.replace('"runs/teacher"', repr(str(request.getfixturevalue(folder)))), "README.md", "exec"), {})
    printed = capsys.readouterr().out.split()
    assert printed and int(printed[-2]) > 0 and float(printed[-1]) > 0  # … forwards seconds
