"""What ``fraudseq serve`` configures: :class:`ServeSettings`, passed to every worker
through ``FRAUDSEQ_SERVE_*`` environment variables, the API key's variable, and the
service's default limits (batch size, body size, body deadline)."""

import os
from dataclasses import dataclass
from typing import Any

from fraudseq.errors import FraudseqError

__all__ = [
    "BODY_TIMEOUT_SECONDS",
    "DEFAULT_MAX_BATCH",
    "ENV_PREFIX",
    "ServeSettings",
    "default_max_body_bytes",
    "resolve_api_key",
]

#: Seconds a client has to send a request's body once its headers arrived (a stalled upload
#: is answered 408 and its connection closed; the header deadline is in `fraudseq.http_limits`).
BODY_TIMEOUT_SECONDS = 30.0
DEFAULT_MAX_BATCH = 1000


def default_max_body_bytes(max_batch: int) -> int:
    """Body limit: 4 KiB per transaction of a full batch, at least 1 MiB."""
    return max(1 << 20, 4096 * max_batch)


ENV_PREFIX = "FRAUDSEQ_SERVE_"


@dataclass(frozen=True)
class ServeSettings:
    """What ``fraudseq serve`` passes to every worker (through the environment).

    ``api_key_env`` is the *name* of the variable holding the key, so the key itself is
    never copied into another variable or onto a command line.
    """

    model_dir: str
    state: str = "memory"
    api_key_env: str | None = None
    max_batch: int = DEFAULT_MAX_BATCH
    max_body_bytes: int | None = None
    min_history: int = 3
    ttl_seconds: int | None = None
    body_timeout: int = int(BODY_TIMEOUT_SECONDS)
    reasons: str = "alerts"
    clock: str = "wall"
    history_days: int | None = None

    _INT_FIELDS = (
        "max_batch", "max_body_bytes", "min_history", "ttl_seconds", "body_timeout",
        "history_days",
    )  # fmt: skip

    def to_env(self) -> dict[str, str]:
        out = {}
        for name in ("model_dir", "state", "api_key_env", "reasons", "clock", *self._INT_FIELDS):
            value = getattr(self, name)
            if value is not None:
                out[ENV_PREFIX + name.upper()] = str(value)
        return out

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> "ServeSettings":
        environ = os.environ if environ is None else environ
        model_dir = environ.get(ENV_PREFIX + "MODEL_DIR")
        if not model_dir:
            raise FraudseqError(
                f"{ENV_PREFIX}MODEL_DIR is not set: app_from_env() needs the model directory. "
                "Fix: start the server with `fraudseq serve MODEL_DIR`, or set the variable."
            )
        kwargs: dict[str, Any] = {"model_dir": model_dir}
        for name in ("state", "api_key_env", "reasons", "clock"):
            value = environ.get(ENV_PREFIX + name.upper())
            if value:
                kwargs[name] = value
        for name in cls._INT_FIELDS:
            value = environ.get(ENV_PREFIX + name.upper())
            if value:
                try:
                    kwargs[name] = int(value)
                except ValueError:
                    raise FraudseqError(
                        f"{ENV_PREFIX}{name.upper()}={value!r} is not an integer."
                    ) from None
        return cls(**kwargs)

    def app_kwargs(self) -> dict[str, Any]:
        return {
            "model_dir": self.model_dir,
            "state": self.state,
            "api_key": resolve_api_key(self.api_key_env),
            "max_batch": self.max_batch,
            "max_body_bytes": self.max_body_bytes,
            "body_timeout": self.body_timeout,
            "detector_options": {
                "min_history": self.min_history,
                "ttl_seconds": self.ttl_seconds,
                "clock": self.clock,
                "history_days": self.history_days,
            },
            "reasons": self.reasons,
            "freeze_gc": True,  # a serving process (see create_app)
        }


def resolve_api_key(env_var: str | None) -> str | None:
    """The key held by the environment variable `env_var`; refuses an unset/empty one."""
    if env_var is None:
        return None
    value = os.environ.get(env_var)
    if not value:
        state = "empty" if value == "" else "not set"
        raise FraudseqError(
            f"--api-key-env {env_var}: the environment variable {env_var} is {state}, so "
            f"there is no API key to require. Fix: export {env_var}=<a long random key> "
            f"before starting the server, or leave out --api-key-env to serve without a key."
        )
    return value
