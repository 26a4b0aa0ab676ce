"""The README's Python API example runs as written on the shipped teacher, and on micro model folders in its place
(one with a distilled student)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hyperbagel.pretrained import HERE

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_api_example() -> str:
    text = README.read_text()
    section = text[text.index("## Python API"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.parametrize("folder", ["shipped", "micro_folder", "micro_student_folder"])
def test_readme_api_example_runs(folder, request, capsys):
    code = readme_api_example()
    assert '"shapes-teacher"' in code
    if folder == "shipped":
        if not (HERE / "shapes-teacher" / "config.json").is_file():
            pytest.skip("shapes-teacher is not shipped yet")
    else:
        code = code.replace('"shapes-teacher"', repr(str(request.getfixturevalue(folder))))
    exec(compile(code, "README.md", "exec"), {})
    printed = capsys.readouterr().out.split()
    assert printed and int(printed[-2]) > 0 and float(printed[-1]) > 0  # … forwards seconds
