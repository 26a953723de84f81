"""Loaded by every Python process a test starts (``PYTHONPATH`` names this folder): the
network guard, see ``netguard.py``."""

import netguard

netguard.install()
