"""
The docs build with Sphinx, warnings as errors (as tox -e docs does).
"""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_docs_build_without_warnings(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "-q",
            "-b",
            "html",
            str(ROOT / "docs"),
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    reference = (tmp_path / "configuration.html").read_text()
    # The reference is generated from the code: every option is in it.
    from wsmux.factory import OPTION_NAMES
    from wsmux.limits import LIMIT_NAMES

    for name in OPTION_NAMES:
        assert name in reference, name
    assert all(name in (tmp_path / "hardening.html").read_text() for name in LIMIT_NAMES)
