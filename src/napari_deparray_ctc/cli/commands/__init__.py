"""One module per ``deparray-ctc`` command. Each has ``HELP`` (its line in ``--help``),
``DESCRIPTION``, ``add_arguments(parser)`` and ``run(args)``; ``ADD_HELP = False`` where the
command brings its own ``-h``. ``cli/parser.py`` builds the parser from them.

The order of :data:`COMMANDS` is the order of ``deparray-ctc --help``.
"""

COMMANDS = (
    "synth",
    "train",
    "classify",
    "calibrate",
    "evaluate",
    "explain",
    "suggest",
    "info",
    "check",
    "export",
    "demo",
)
