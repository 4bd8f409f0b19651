"""One module per ``deparray-ctc`` command: ``register(subparsers)`` adds it, ``run(args)`` runs it.

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
    "export",
    "demo",
)
