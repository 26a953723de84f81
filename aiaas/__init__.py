"""aiaas: one PyTorch model, packaged once, served on any cloud behind serverless functions.

The core never imports torch; the model server (``aiaas.runtime``) and user model code do.
"""

from typing import TYPE_CHECKING, Any

from aiaas.errors import AiaasError
from aiaas.model import Model

if TYPE_CHECKING:
    from aiaas.client import Client

__all__ = ["AiaasError", "Client", "Model", "__version__"]


def __getattr__(name: str) -> Any:
    # The client pulls in httpx; a function's cold start imports aiaas without needing it.
    if name == "Client":
        from aiaas.client import Client

        return Client
    raise AttributeError(f"module 'aiaas' has no attribute {name!r}")


__version__ = "0.1.0"
