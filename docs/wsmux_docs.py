"""
A Sphinx extension that writes the configuration reference from the one
place each setting is declared (wsmux.config.SETTINGS, the fields of
wsmux.factory.ProtocolOptions and wsmux.limits.ServerLimits, and the flags
wsmux.tap makes of them), so the docs cannot drift from the code.
"""

from docutils import nodes
from docutils.parsers.rst import Directive
from docutils.statemachine import StringList


def _table(header, rows):
    lines = [".. list-table::", "   :header-rows: 1", ""]
    for row in [header, *rows]:
        lines.append("   * - " + row[0])
        lines.extend("     - " + cell for cell in row[1:])
    return lines


class ProtocolOptionsDirective(Directive):
    """
    ``.. wsmux-protocol-options::`` renders every protocol option.
    """

    def run(self):
        from wsmux.factory import option_reference

        rows = [
            (
                f"``{name}``",
                kind,
                f"``{default!r}``" if default != () else "``[]``",
                help_text.replace("*", r"\*"),
            )
            for name, kind, default, help_text in option_reference()
        ]
        return self._parse(_table(("option", "type", "default", "meaning"), rows))

    def _parse(self, lines):
        node = nodes.section()
        node.document = self.state.document
        self.state.nested_parse(StringList(lines), self.content_offset, node)
        return node.children


class DefaultsDirective(ProtocolOptionsDirective):
    """
    ``.. wsmux-defaults::`` renders every limit and protocol option with its
    default, in one table.
    """

    def run(self):
        from wsmux.factory import option_reference
        from wsmux.limits import limit_reference

        rows = [
            (
                f"``{name}``",
                where,
                f"``{default!r}``" if default != () else "``[]``",
                text.replace("*", r"\*"),
            )
            for where, reference in (
                ("``[limits]``", limit_reference()),
                ("``[defaults]``, route", option_reference()),
            )
            for name, _kind, default, text in reference
        ]
        return self._parse(_table(("setting", "where", "default", "meaning"), rows))


class CommandLineDirective(ProtocolOptionsDirective):
    """
    ``.. wsmux-command-line::`` renders ``twistd wsmux --help``'s options.
    """

    def run(self):
        from wsmux.tap import Options

        options = Options()
        rows = []
        for long, short, _default, doc, *_ in options.optParameters:
            flag = f"``--{long}=VALUE``" + (f", ``-{short}``" if short else "")
            rows.append((flag, " ".join(doc.split())))
        for long, _short, doc in options.optFlags:
            rows.append((f"``--{long}``", " ".join(doc.split())))
        for name in sorted(n for n in dir(options) if n.startswith("opt_") and len(n) > 5):
            method = getattr(options, name)
            flag = name[4:].replace("_", "-")
            if flag in ("help", "version"):
                continue
            takes_value = method.__code__.co_argcount > 1
            doc = " ".join((method.__doc__ or "").split())
            rows.append((f"``--{flag}{'=VALUE' if takes_value else ''}``", doc))
        return self._parse(_table(("flag", "meaning"), rows))


class SettingsDirective(ProtocolOptionsDirective):
    """
    ``.. wsmux-settings::`` renders every server-wide setting.
    """

    def run(self):
        from wsmux.config import SETTINGS

        rows = [
            (
                f"``{s.name}``",
                f"``--{s.flag}``" if s.flag else "(file only)",
                f"``{s.default!r}``" if s.default not in (None, ()) else "(none)",
                s.help.replace("*", r"\*"),
            )
            for s in SETTINGS
        ]
        return self._parse(_table(("key", "flag", "default", "meaning"), rows))


class InternalsDirective(ProtocolOptionsDirective):
    """
    ``.. wsmux-internals::`` renders every internal of other packages that
    wsmux touches, from the seam's own declarations (wsmux._compat).
    """

    def run(self):
        from wsmux import _compat

        _compat.declare_all()

        rows = [
            (
                f"``{internal.name}``",
                "; ".join(f"``{touch}``" for touch in internal.touches),
                internal.why,
                internal.fallback,
            )
            for internal in _compat.INTERNALS.values()
        ]
        return self._parse(_table(("internal", "touches", "why", "without it"), rows))


def setup(app):
    app.add_directive("wsmux-internals", InternalsDirective)
    app.add_directive("wsmux-protocol-options", ProtocolOptionsDirective)
    app.add_directive("wsmux-command-line", CommandLineDirective)
    app.add_directive("wsmux-defaults", DefaultsDirective)
    app.add_directive("wsmux-settings", SettingsDirective)
    return {"parallel_read_safe": True}
