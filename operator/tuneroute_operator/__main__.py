"""`python -m tuneroute_operator`: run the operator with settings from the environment."""

from __future__ import annotations

import os
import socket
import zlib

import kopf

from . import handlers  # noqa: F401  (registers the handlers)
from .settings import Settings


def peering_priority(explicit: int | None) -> int:
    """kopf pauses every replica when two share a priority: give each pod its own."""
    if explicit is not None:
        return explicit
    return zlib.crc32(os.environ.get("POD_NAME", socket.gethostname()).encode()) % 10_000 + 1


def main() -> None:
    s = Settings()
    # kopf's own JSON formatter keeps the object reference (namespace/name) in each line.
    kopf.configure(
        log_format=kopf.LogFormat.JSON if s.log_format == "json" else kopf.LogFormat.FULL,
        log_refkey="k8s",
        log_prefix=True,
    )
    kopf.run(
        standalone=s.peering is None,
        peering_name=s.peering,
        priority=peering_priority(s.priority),
        namespaces=s.namespaces,
        clusterwide=not s.namespaces,
        liveness_endpoint=f"http://0.0.0.0:{s.health_port}/healthz",
    )


if __name__ == "__main__":
    main()
