"""The HTTP API over a Detector: :func:`create_app`, :func:`app_from_env` (see
:mod:`fraudseq.serving.http.app`).

Modules: ``settings`` (what ``fraudseq serve`` configures), ``requests`` (request and reply
models from the schema), ``errors`` (error replies), ``metrics``, ``middleware`` (metrics,
API key, body limits) and ``app`` (the routes and the detector behind them).
"""

import logging

from fraudseq.redaction import RedactingFilter

# Every record of the service's loggers is redacted, whatever handlers the host installs
# (before any module of the service logs).
for _name in ("fraudseq", "fraudseq.serving"):
    if not any(isinstance(f, RedactingFilter) for f in logging.getLogger(_name).filters):
        logging.getLogger(_name).addFilter(RedactingFilter())

from fraudseq.serving.http.app import app_from_env, create_app  # noqa: E402

__all__ = ["app_from_env", "create_app"]
