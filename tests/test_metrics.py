"""
Metrics in memory: label values stay bounded whatever clients send.
"""

from prometheus_client import generate_latest

from wsmux import EchoHandler, Route, RouteTree
from wsmux.metrics import close_code_label, metrics_registry
from wsmux.testing import connect


def test_client_chosen_close_codes_do_not_become_label_values():
    tree = RouteTree([Route("/e", EchoHandler)])
    codes = [1000] + list(range(3000, 5000, 20))
    for code in codes:
        conn = connect(tree, "/e")
        conn.client.sendClose(code)
        conn.flush()
    text = generate_latest(metrics_registry(tree)).decode()
    labels = {
        line.split('code="')[1].split('"')[0]
        for line in text.splitlines()
        if "wsmux_closes_total{" in line
    }
    assert labels == {"1000", "3xxx", "4xxx"}


def test_close_code_labels():
    assert [close_code_label(c) for c in (None, 1000, 1015, 1016, 2999, 3000, 4999, 5000)] == [
        "1006", "1000", "1015", "other", "other", "3xxx", "4xxx", "other",
    ]  # fmt: skip
