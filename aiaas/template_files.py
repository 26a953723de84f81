"""Where the shipped template files are: ``templates/`` (function packaging files, the
``aiaas init`` scaffold, the container image) and ``iac/`` (each cloud's infrastructure
template).

The files live in the repository's top-level ``templates/`` and ``iac/``. A built wheel
carries them as ``aiaas/templates/`` and ``aiaas/iac/<cloud>/`` (``setup.py`` maps the
folders there; of ``iac/`` only the cloud templates, not the workflow nor the checkers); a source
checkout or an editable install reads the top-level folders themselves.
:func:`templates_dir` and :func:`iac_dir` are the one place that knows.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
# Installed from a wheel first, then the source checkout this package sits in.
CANDIDATES = (_PACKAGE / "templates", _PACKAGE.parent / "templates")
# Sub-folders every real templates folder has (an unrelated ``templates`` folder next to
# the package in site-packages does not count).
_MARKERS = ("init", "functions", "container")


def templates_dir() -> Path:
    """The templates folder, or the wheel's place for it if none is found.

    A missing folder is not an error here: reading a file from it raises
    ``FileNotFoundError`` naming the path, which is where the problem shows.
    """
    for candidate in CANDIDATES:
        if all((candidate / marker).is_dir() for marker in _MARKERS):
            return candidate
    return CANDIDATES[0]


# Installed from a wheel first, then the source checkout; every real iac folder has these.
IAC_CANDIDATES = (_PACKAGE / "iac", _PACKAGE.parent / "iac")
_IAC_MARKERS = ("aws", "azure", "alibaba")


def iac_dir() -> Path:
    """The infrastructure templates' folder (``iac/``), or the wheel's place for it if none
    is found (reading a file from it then raises ``FileNotFoundError`` naming the path)."""
    for candidate in IAC_CANDIDATES:
        if all((candidate / marker).is_dir() for marker in _IAC_MARKERS):
            return candidate
    return IAC_CANDIDATES[0]
