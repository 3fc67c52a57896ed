"""
The README's two commands stay true: CI runs the test command as written.
"""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands():
    return re.findall(r"```sh\n(.+?)\n```", (ROOT / "README.md").read_text())


def test_readme_opens_with_start_and_test_commands():
    start, test = readme_commands()[:2]
    assert start.endswith("twistd -n wsmux")
    assert test.endswith("pytest")


def test_ci_runs_the_readme_test_command():
    test = readme_commands()[1]
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test in lines
