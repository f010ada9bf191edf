"""`python -m tuneroute_operator`: run the operator with settings from the environment."""

from __future__ import annotations

import kopf

from . import handlers  # noqa: F401  (registers the handlers)
from .settings import Settings


def main() -> None:
    s = Settings()
    kopf.configure(verbose=False)
    kopf.run(
        standalone=s.peering is None,
        peering_name=s.peering,
        priority=s.priority,
        namespaces=s.namespaces,
        clusterwide=not s.namespaces,
        liveness_endpoint=f"http://0.0.0.0:{s.health_port}/healthz",
    )


if __name__ == "__main__":
    main()
