"""
The seam between wsmux and other packages' internals.

wsmux is fast partly because it reads or drives a few private names of
Twisted, pyOpenSSL, Autobahn and txaio, and the undocumented C masker of
websockets.  Every such touch lives in one module per package,
L{wsmux._compat_twisted}, L{wsmux._compat_pyopenssl},
L{wsmux._compat_autobahn}, L{wsmux._compat_http2} (Twisted's private HTTP/2)
and L{wsmux._compat_websockets}, and is declared there as an L{Internal}:
what it touches, why, the versions it was checked against, a check that the
internal still looks as expected, and what wsmux does without it (its
public path).

The checks run when those modules are imported.  An internal whose check
fails is not used: wsmux takes the public path for it and logs one line
saying which and why.  Setting C{WSMUX_PUBLIC_PATH=1} in the environment
switches every internal off (the test suite runs once that way, to prove
the public paths).

This module itself imports nothing but the standard library and
C{twisted.logger}.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from typing import Any, Callable

from twisted.logger import Logger

_log = Logger(namespace="wsmux")


def env_flag(name: str) -> bool:
    """
    Whether the environment variable C{name} is set to anything but
    nothing or C{0}.
    """
    return os.environ.get(name, "").strip() not in ("", "0")


#: Whether every internal is switched off (C{WSMUX_PUBLIC_PATH=1}).
PUBLIC_ONLY = env_flag("WSMUX_PUBLIC_PATH")


@dataclass
class Internal:
    """
    One use of another package's private names.

    @ivar name: wsmux's name for it (C{"twisted.one_pass_head"}).
    @ivar touches: the private names it reads, calls or overrides.
    @ivar why: what it buys.
    @ivar checked: the versions it was checked against.
    @ivar fallback: what wsmux does without it.
    @ivar check: returns L{None} when the internal looks as expected, else
        a sentence saying what changed.
    @ivar problem: what the check said (or that the environment switched it
        off); L{None} while the internal is in use.
    """

    name: str
    touches: tuple[str, ...]
    why: str
    checked: str
    fallback: str
    check: Callable[[], str | None] = field(repr=False)
    problem: str | None = None

    @property
    def enabled(self) -> bool:
        return self.problem is None


#: Every internal, by name, in the order they were declared.
INTERNALS: dict[str, Internal] = {}


def declare(
    name: str,
    touches: tuple[str, ...],
    why: str,
    checked: str,
    fallback: str,
    check: Callable[[], str | None],
    needs: tuple[str, ...] = (),
    quiet: bool = False,
) -> bool:
    """
    Declare an internal, run its check, and say whether to use it.

    A check that raises counts as failed: the internal is not used.

    @param needs: internals this one builds on: it is used only with them.
    @param quiet: say why it is off at info level, not as a warning (an
        optional extra that is not installed).
    """
    internal = Internal(name, touches, why, checked, fallback, check)
    try:
        problem = check()
    except Exception as e:  # an internal gone so far that the check broke
        problem = f"its check raised {e.__class__.__name__}: {e}"
    off = [need for need in needs if not INTERNALS[need].enabled]
    if problem is None and off:
        problem = f"it needs {', '.join(off)}, which is off"
    if PUBLIC_ONLY:
        internal.problem = "WSMUX_PUBLIC_PATH is set"
    elif problem is not None:
        internal.problem = problem
        (_log.info if quiet else _log.warn)(
            "wsmux: not using {name} ({problem}); {fallback}",
            name=name,
            problem=problem,
            fallback=fallback,
        )
    INTERNALS[name] = internal
    return internal.enabled


#: The seam's modules: each declares its internals when imported.
MODULES = (
    "wsmux._compat_twisted",
    "wsmux._compat_pyopenssl",
    "wsmux._compat_websockets",
    "wsmux._compat_autobahn",
    "wsmux._compat_http2",
)


def declare_all() -> dict[str, Internal]:
    """
    Import every module of the seam (L{MODULES}), so that every internal
    is declared; return L{INTERNALS}.
    """
    for module in MODULES:
        importlib.import_module(module)
    return INTERNALS


def enabled(name: str) -> bool:
    """
    Whether the internal C{name} is in use.
    """
    return INTERNALS[name].enabled


def missing_names(owner: object, names: tuple[str, ...]) -> str | None:
    """
    A check: L{None} when C{owner} has every attribute in C{names}.
    """
    gone = [name for name in names if not hasattr(owner, name)]
    if gone:
        label = getattr(owner, "__qualname__", None) or type(owner).__qualname__
        return f"{label} has no {', '.join(gone)}"
    return None


def code_names(function: object, names: tuple[str, ...]) -> str | None:
    """
    A check: L{None} when C{function}'s code still uses every name in
    C{names} (as an attribute, global or local name).
    """
    code = getattr(function, "__code__", None)
    if code is None:
        return f"{function!r} is not a Python function any more"
    used = set(code.co_names) | set(code.co_varnames)
    gone = [name for name in names if name not in used]
    if gone:
        return f"{function.__qualname__} no longer uses {', '.join(gone)}"  # type: ignore[attr-defined]
    return None


def slots_hold(cls: type, names: tuple[str, ...]) -> str | None:
    """
    A check: L{None} when a bare instance of C{cls} (made without
    C{__init__}) keeps each of C{names} in a slot, not in a dict of its own.
    """
    probe: Any = cls.__new__(cls)  # type: ignore[call-overload]
    for name in names:
        setattr(probe, name, 1)
        if name in getattr(probe, "__dict__", ()):
            return f"{cls.__qualname__}: a slot does not hold {name}"
    return None


def all_of(*problems: str | None) -> str | None:
    """
    The first problem among C{problems}, or L{None}.
    """
    for problem in problems:
        if problem is not None:
            return problem
    return None
