"""python -m tuneroute_router --config FILE [--host 0.0.0.0 --port 8080]"""

from __future__ import annotations

import argparse
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="tuneroute_router", description=__doc__)
    ap.add_argument("--config", default="/etc/tuneroute/router.yaml", help="router config (YAML)")
    ap.add_argument("--host", default="0.0.0.0")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--reload-interval", type=float, default=2.0, help="seconds between config checks")
    ap.add_argument("--log-level", default="info")
    args = ap.parse_args(argv)

    # one line per record, the decision lines are JSON themselves
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s", stream=sys.stdout
    )
    logging.getLogger("tuneroute.decision").handlers[:] = []
    dh = logging.StreamHandler(sys.stdout)
    dh.setFormatter(logging.Formatter("%(message)s"))
    logging.getLogger("tuneroute.decision").addHandler(dh)
    logging.getLogger("tuneroute.decision").propagate = False

    import uvicorn

    from .auth import KeysError
    from .config import ConfigError
    from .http_limits import protocol
    from .server import Router

    try:
        router = Router(args.config, reload_interval=args.reload_interval)
    except (ConfigError, KeysError) as e:
        print(f"tuneroute-router: {e}", file=sys.stderr)
        return 2
    uvicorn.run(
        router.app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=False,
        http=protocol(router.limits),  # httptools, with header size and time limits
        loop="uvloop" if _has("uvloop") else "asyncio",
    )
    return 0


def _has(mod: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(mod) is not None


if __name__ == "__main__":
    sys.exit(main())
