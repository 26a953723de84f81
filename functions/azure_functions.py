"""Azure Functions entrypoint (Python v2 programming model).

The deployed ``function_app.py`` is one line, ``from functions.azure_functions import app``
(templates/functions/azure/); ``host.json`` sets ``routePrefix`` to ``""`` so the routes are
``/predict`` and ``/v2/...`` as everywhere else. With ``function.auth: platform`` Azure's
function keys (``x-functions-key``) guard the app and our API-key check is off.
"""

from __future__ import annotations

import azure.functions as func

from functions.bootstrap import FunctionEnvironment, app_from_environment, function_config
from functions.platforms.azure import PLATFORM

_env = FunctionEnvironment.read()  # once: the config and the app are built from the same read
_config = function_config(_env)
app = func.AsgiFunctionApp(
    app=app_from_environment(PLATFORM, _config, _env),
    http_auth_level=(
        func.AuthLevel.FUNCTION if _config.function.auth == "platform" else func.AuthLevel.ANONYMOUS
    ),
)
