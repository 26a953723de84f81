"""A test worker that is done leaves without tearing its interpreter down.

An xdist worker ends a run holding everything its test files imported and built (torch,
the cloud SDKs, emulators, models): Python's teardown of that, after the exit handlers,
took it 1.5 to 2 s of CPU, and the four workers, which finish together, spent it side by side
while the run waited on them (a run's last 6 to 9 s). :func:`install` registers, first of all
(sitecustomize runs before anything else registers one, so it is the last to run), a handler
that ends the process with ``os._exit(0)`` once every other exit handler has run (logging's,
multiprocessing's, tempfile's: what they flush, stop or remove is done as before), but only
in a worker whose pytest session is over: the process whose pid tests/conftest.py put in
:data:`VARIABLE` when its worker was unconfigured. Any other process (the processes tests
start inherit the variable, not the pid) exits as it would have, with its own status.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys

VARIABLE = "AIAAS_TEST_WORKER_DONE"


def _leave_if_done() -> None:
    if os.environ.get(VARIABLE) == str(os.getpid()):
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(AttributeError, OSError, ValueError):  # closed, detached
                stream.flush()
        os._exit(0)


def install() -> None:
    """Register the handler (in every process: it does nothing outside a finished worker)."""
    atexit.register(_leave_if_done)
