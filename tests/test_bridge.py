"""
Exec routes as configured: every key checked, with words a person
understands, before any program runs.
"""

import sys

import pytest

from wsmux.bridge import ExecSpec
from wsmux.config import ConfigError, load_file, parse_route_arg


def test_a_route_from_the_file_and_from_the_command_line(tmp_path):
    config = tmp_path / "wsmux.toml"
    (tmp_path / "work").mkdir()
    config.write_text(
        "[[routes]]\npath = '/t/{f}'\nhandler = 'exec'\n"
        f"command = ['{sys.executable}', '-u', 'x.py']\nmode = 'binary'\n"
        "max_processes = 3\ncwd = 'work'\nenv = { A = 'b' }\nkill_grace = 0.5\n"
        "max_message_size = 1000\n"
    )
    [route] = load_file(str(config))["routes"]
    assert route.handlers == ("exec",)
    assert route.options == {"max_message_size": 1000}
    spec = route.exec
    assert spec.command == (sys.executable, "-u", "x.py") and spec.mode == "binary"
    assert (spec.max_processes, spec.cwd, spec.env, spec.kill_grace) == (
        3,
        str(tmp_path / "work"),
        (("A", "b"),),
        0.5,
    )
    route = parse_route_arg("/x=exec:cat -u 'a b'")
    assert route.exec.command == ("cat", "-u", "a b") and route.exec.mode == "lines"


@pytest.mark.parametrize(
    "table, words",
    [
        ({}, "command is required"),
        ({"command": "cat file"}, "must be a list of strings (an argv list; no shell"),
        ({"command": []}, "command is required"),
        ({"command": ["cat", 3]}, "command is required"),
        ({"command": ["/no/such/program"]}, "is not an executable program"),
        ({"command": ["no-such-program-here"]}, "is not an executable program"),
        ({"command": ["cat"], "mode": "text"}, "mode must be one of lines, binary"),
        ({"command": ["cat"], "max_processes": -1}, "max_processes must be a whole number"),
        ({"command": ["cat"], "max_processes": True}, "max_processes must be a whole number"),
        ({"command": ["cat"], "cwd": "/no/such/dir"}, "is not a directory"),
        ({"command": ["cat"], "env": {"A": 1}}, "env must be a table of strings"),
        ({"command": ["cat"], "env": {"A=B": "c"}}, "env must be a table of strings"),
        ({"command": ["cat"], "pass_env": "PATH"}, "pass_env must be a list"),
        ({"command": ["cat"], "kill_grace": -1}, "kill_grace must be 0 to 300"),
        ({"command": ["cat"], "shell": True}, "unknown key 'shell'"),
    ],
)
def test_bad_exec_routes_are_named(table, words):
    with pytest.raises(ValueError) as caught:
        ExecSpec.from_table(table)
    assert words in str(caught.value)


def test_bad_exec_routes_in_the_file_and_on_the_command_line(tmp_path):
    config = tmp_path / "wsmux.toml"
    config.write_text("[[routes]]\npath = '/x'\nhandler = 'exec'\ncommand = 'ls -l'\n")
    with pytest.raises(ConfigError, match=r"routes\[0\]: command must be a list"):
        load_file(str(config))
    with pytest.raises(ConfigError, match="No closing quotation"):
        parse_route_arg("/x=exec:cat 'a")
    with pytest.raises(ConfigError, match="is not an executable program"):
        parse_route_arg("/x=exec:/nowhere/prog")
