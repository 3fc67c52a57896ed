"""
The built wheel, installed into a fresh virtualenv, is a twistd plugin.
"""

import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

from tests.twistd_process import environ_without

ROOT = Path(__file__).resolve().parents[1]


def build_wheel(tmp_path: Path, env: dict[str, str] | None = None) -> Path:
    # Build from a clean copy: a stale build/ folder would leak old files.
    source = tmp_path / "source"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(
            "build",
            "dist",
            "*.egg-info",
            ".git",
            ".tox",
            ".venv",
            ".hypothesis",
            ".mypy_cache",
            ".ruff_cache",
            "__pycache__",
            "node_modules",
            "dropin.cache",
            "*.so",
        ),
    )
    dist = tmp_path / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(dist),
            str(source),
        ],
        check=True,
        capture_output=True,
        cwd=tmp_path,
        env=env,
    )
    (wheel,) = dist.glob("wsmux-*.whl")
    return wheel


def test_wheel_installs_a_twistd_plugin(tmp_path):
    wheel = build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    assert "twisted/plugins/wsmux_plugin.py" in names
    assert "twisted/plugins/__init__.py" not in names
    assert not any(n.startswith("tests/") for n in names)
    # wsmux's C accelerator, built with the wheel (this machine has a C
    # compiler and Python's headers).
    assert any(n.startswith("wsmux/_speedups.") and n.endswith(".so") for n in names)

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    # A real install, dependencies from the package index, nothing borrowed
    # from this environment (whose twisted/plugins may hold wsmux already).
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", str(wheel)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    help_text = subprocess.run(
        [str(python), "-c", "from twisted.scripts.twistd import run; run()", "--help"],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    ).stdout
    assert "wsmux" in help_text
    where = subprocess.run(
        [str(python), "-c", "import wsmux; print(wsmux.__file__)"],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    ).stdout
    assert str(env_dir) in where
    # The plain install unmasks, cuts and makes frames in C, as the
    # benchmarks measure it.
    masker = subprocess.run(
        [
            str(python),
            "-c",
            "from wsmux._compat_websockets import C_MASKER; from wsmux._frames import SPEEDUPS; "
            "print(C_MASKER, SPEEDUPS)",
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=environ_without("WSMUX_PUBLIC_PATH", "WSMUX_PURE_PYTHON"),
    ).stdout
    assert masker.split() == ["True", "True"]


def test_without_a_c_compiler_the_wheel_is_built_without_the_accelerator(tmp_path):
    # The C accelerator is optional: where it cannot be compiled, the
    # install goes on (and wsmux runs in Python).
    wheel = build_wheel(tmp_path, env={**os.environ, "CC": "false"})
    names = zipfile.ZipFile(wheel).namelist()
    assert "wsmux/_frames.py" in names
    assert not any(n.startswith("wsmux/_speedups") for n in names)
