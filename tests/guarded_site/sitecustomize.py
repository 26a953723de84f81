"""Loaded by every Python process a test starts (``PYTHONPATH`` names this folder): the
network guard, see ``netguard.py``, and a finished test worker's quick exit, see
``worker_exit.py`` (first, so that its exit handler runs after every other)."""

import worker_exit

worker_exit.install()

import netguard  # noqa: E402 - after worker_exit, whose handler must be the first registered

netguard.install()
