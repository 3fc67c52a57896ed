"""
The Autobahn TestSuite (fuzzing client cases, run by kosoku) against a real
twistd wsmux echo route configured as docs/examples/conformance.toml says.

Required: every case OK, NON-STRICT or INFORMATIONAL.

WSMUX_TESTSUITE_EXCLUDE (comma-separated case globs, e.g. "12.*,13.*") leaves
cases out, and the summary line says which: .ci/matrix uses it to keep the
permessage-deflate cases (12.x, 13.x: Autobahn's own frame path whatever the
reactor or the seam, and most of the suite's time) to the main run.
"""

import collections
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SUMMARY_LINES
from tests.twistd_process import ROOT

ACCEPTED = {"OK", "NON-STRICT", "INFORMATIONAL"}


def kosoku_binary():
    found = shutil.which("kosoku") or str(Path(sys.executable).with_name("kosoku"))
    if not Path(found).exists():
        pytest.fail("kosoku is not installed: pip install -e '.[test]'")
    return found


@pytest.mark.conformance
def test_autobahn_testsuite_is_clean(start_server, tmp_path):
    server = start_server("--config", str(ROOT / "docs" / "examples" / "conformance.toml"))
    out = tmp_path / "reports"
    excluded = [
        g.strip() for g in os.environ.get("WSMUX_TESTSUITE_EXCLUDE", "").split(",") if g.strip()
    ]
    result = subprocess.run(
        [kosoku_binary(), server.url("/echo"), "-o", str(out), "-p", "2"]
        + [arg for glob in excluded for arg in ("-x", glob)],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    index = json.loads((out / "index.json").read_text())
    cases = [case for agent in index.values() for case in agent.items()]
    counts = collections.Counter(c["behavior"] for _, c in cases)
    close_counts = collections.Counter(c["behaviorClose"] for _, c in cases)
    SUMMARY_LINES.append(
        f"Autobahn TestSuite (kosoku): {len(cases)} cases; "
        f"behavior {dict(sorted(counts.items()))}; close {dict(sorted(close_counts.items()))}"
        + (f"; excluded {', '.join(excluded)}" if excluded else "")
        + (" (WSMUX_PUBLIC_PATH)" if os.environ.get("WSMUX_PUBLIC_PATH") else "")
        + (
            f" (reactor {os.environ['WSMUX_TEST_REACTOR']})"
            if os.environ.get("WSMUX_TEST_REACTOR")
            else ""
        )
    )
    bad = {
        case_id: (c["behavior"], c["behaviorClose"])
        for case_id, c in cases
        if c["behavior"] not in ACCEPTED or c["behaviorClose"] not in ACCEPTED
    }
    assert len(cases) >= (500 if not excluded else 200), (
        result.stdout[-2000:] + result.stderr[-2000:]
    )
    assert not bad, f"cases not clean: {bad}\n{result.stdout[-3000:]}"
