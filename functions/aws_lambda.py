"""AWS Lambda entrypoint: ``functions.aws_lambda.handler``.

Mangum turns Lambda function URL events (payload 2.0, base64 bodies, cookies) and API
Gateway HTTP API events into ASGI calls to the one function app. The app is built at cold
start (Lambda's init phase), so the first request does not pay for it.
"""

from __future__ import annotations

from mangum import Mangum

from functions.bootstrap import app_from_environment
from functions.platforms.aws import PLATFORM

handler = Mangum(app_from_environment(PLATFORM), lifespan="off")
