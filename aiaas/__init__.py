"""aiaas: one PyTorch model, packaged once, served on any cloud behind serverless functions.

The core never imports torch; the model server (``aiaas.runtime``) and user model code do.
``aiaas.deploy``, ``plan``, ``status``, ``deployments``, ``invoke``, ``logs`` and ``delete``
are the Python API (:mod:`aiaas.api`), loaded on first use.
"""

from typing import TYPE_CHECKING, Any

from aiaas.errors import AiaasError

if TYPE_CHECKING:
    from aiaas.client import Client
    from aiaas.model import Model

API = ("deploy", "plan", "status", "deployments", "invoke", "logs", "delete")
"""The names :mod:`aiaas.api` lends this package."""

__all__ = ["AiaasError", "Client", "Model", "__version__", *API]


def __getattr__(name: str) -> Any:
    # The model API is a pydantic model: a function's cold start imports aiaas and never
    # needs it (nor pydantic), so it loads on first use too.
    if name == "Model":
        from aiaas.model import Model

        return Model
    # The client pulls in httpx, and the API the providers' registry and adapters: a
    # function's cold start imports aiaas and needs neither, so both load on first use.
    if name == "Client":
        from aiaas.client import Client

        return Client
    if name in API:
        # By name, not an import statement: the API is a composition root (it builds a
        # provider's control plane), which no core module depends on; this only forwards the
        # attribute (tests/test_cli_api.py checks `import aiaas` loads neither). An import
        # statement would also put the API, and what it imports, in every function package
        # (functions/packaging.py follows import statements, lazy ones included).
        import importlib

        return getattr(importlib.import_module("aiaas.api"), name)
    raise AttributeError(f"module 'aiaas' has no attribute {name!r}")


__version__ = "0.1.0"
