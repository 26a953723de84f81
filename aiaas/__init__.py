"""aiaas: one PyTorch model, packaged once, served on any cloud behind serverless functions.

The core never imports torch; the model server (``aiaas.runtime``) and user model code do.
"""

from aiaas.errors import AiaasError
from aiaas.model import Model

__all__ = ["AiaasError", "Model", "__version__"]
__version__ = "0.1.0"
