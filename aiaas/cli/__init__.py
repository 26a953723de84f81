"""The ``aiaas`` command line: the composition root, on top of the Python API (:mod:`aiaas.api`).

It may import every tier and nothing imports it; it sits inside ``aiaas`` only because the
distribution's console script (``aiaas = "aiaas.cli:main"``) lives there.

- :mod:`aiaas.cli.commands`: the app, the project commands (init, bundle, serve, deploy, status,
  invoke, logs, delete, doctor) and :func:`main`, which turns errors into one line;
- :mod:`aiaas.cli.function`: the function tier's commands (function serve|package, keys, usage);
- :mod:`aiaas.cli.support`: the consoles and options they share.
"""

from aiaas.cli.commands import app, main

__all__ = ["app", "main"]
