"""
The benchmarks' report (bench/run.py): C{--rewrite} writes the table again
from results.json, measuring nothing, with the run's own date and machine,
and the wss scenarios in it beside the ws ones.
"""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def load_run():
    spec = importlib.util.spec_from_file_location("bench_run", ROOT / "bench" / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rewrite_from_results(tmp_path, monkeypatch):
    run = load_run()
    monkeypatch.setattr(run, "OUT", tmp_path)
    results = {
        "a": {"wsmux": {"messages_per_s": 300.0}, "node-ws": {"messages_per_s": 100.0}},
        "w-a": {"wsmux": {"messages_per_s": 150.0}, "node-ws": {"messages_per_s": 200.0}},
        "w-e": {"wsmux": {"kib_per_connection": 30.0}, "node-ws": {"kib_per_connection": 32.0}},
    }
    doc = {"date": "2026-01-02", "machine": "a test machine", "results": results}
    (tmp_path / "results.json").write_text(json.dumps(doc))
    monkeypatch.setattr(sys, "argv", ["run.py", "--rewrite"])
    monkeypatch.setattr(run, "build_loadgen", lambda: pytest.fail("--rewrite measured"))
    run.main()
    rst = (tmp_path / "results.rst").read_text()
    assert rst.startswith("Measured 2026-01-02 on a test machine; medians.")
    rows = [row.split("\n\n")[0].rstrip() for row in rst.split("   * - ")]
    cells = "\n     - ".join
    assert cells(["a", "messages_per_s", "300.0", "node-ws", "100.0", "3.00"]) in rows
    assert cells(["w-a", "messages_per_s", "150.0", "node-ws", "200.0", "0.75"]) in rows
    assert any(row.startswith("w-e\n     - kib_per_connection") for row in rows)
    # Nothing was measured, and the results file was not written again.
    assert (tmp_path / "results.json").read_text() == json.dumps(doc)
    if importlib.util.find_spec("matplotlib") is not None:
        assert (tmp_path / "ratios.png").stat().st_size > 0
