"""Azure Functions looks for ``app`` in this file; aiaas builds it from the environment."""

from functions.azure_functions import app  # noqa: F401
