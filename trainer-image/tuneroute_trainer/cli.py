"""Entry point: parse --config, run, and turn every failure into one line naming the field.

Exit codes: 0 done, 2 invalid input/config, 1 any other failure, 143 preempted (checkpoint saved).
The line goes to stderr and to the termination-message file the operator shows; under
`tuneroute_trainer.torchrun` each rank writes its own file there and the launcher reports the rank
that failed first."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from pydantic import ValidationError

from .contract import describe
from .errors import InputError, Preempted

TERMINATION_LOG_ENV = "TUNEROUTE_TERMINATION_LOG"
RANK_MESSAGES_ENV = "TUNEROUTE_RANK_MESSAGES"  # a directory: rank R writes rank-R (set by our torchrun)
# Messages of ranks that failed because another one did (the operator reports the other one).
LOST_PEER = "lost contact with the other ranks"
STOPPED = "stopped by"  # the launcher was told to stop (the Job ended the attempt)


def _terminate(message: str, code: int) -> int:
    line = " ".join(message.split())[:1000]
    print(f"error: {line}", file=sys.stderr, flush=True)
    path = os.environ.get(TERMINATION_LOG_ENV, "/dev/termination-log")
    if os.environ.get(RANK_MESSAGES_ENV) and "RANK" in os.environ:
        path = os.path.join(os.environ[RANK_MESSAGES_ENV], f"rank-{os.environ['RANK']}")
    try:
        with open(path, "w") as f:
            f.write(line + "\n")
    except OSError:
        pass  # outside Kubernetes there may be no such file
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tuneroute_trainer", description=__doc__)
    parser.add_argument("--config", required=True, help="trainer config (YAML or JSON)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from .config import load_config, spec_field

    try:
        cfg = load_config(args.config)
    except FileNotFoundError:
        return _terminate(f"config: file {args.config} not found", 2)
    except ValidationError as e:
        return _terminate(describe(e), 2)
    except ValueError as e:  # YAML/JSON syntax, top level not a mapping
        return _terminate(f"config: {e}", 2)

    try:
        from .train import run

        manifest = run(cfg)
    except InputError as e:
        # Run for a FineTuneJob (it reports there): name the field as the user wrote it.
        field = spec_field(e.field) if cfg.report else e.field
        return _terminate(f"{field}: {e.message}", 2)
    except Preempted as e:
        return _terminate(str(e), 143)
    except Exception as e:
        logging.getLogger("tuneroute_trainer").exception("training failed")
        if _is_lost_peer(e):
            return _terminate(f"{LOST_PEER}: {type(e).__name__}: {e}", 1)
        return _terminate(f"training failed: {type(e).__name__}: {e}", 1)
    if os.environ.get("RANK", "0") == "0":
        print(json.dumps({"event": "done", "output": cfg.output.dir, "metrics": manifest["metrics"]}), flush=True)
    return 0


_PEER_GONE = ("Connection closed by peer", "Connection reset by peer", "remote worker", "NCCL communicator was aborted")


def _is_lost_peer(e: BaseException) -> bool:
    """A collective that failed because another rank is gone (that rank's own error is the one to report)."""
    if int(os.environ.get("WORLD_SIZE", "1")) < 2 or "torch.distributed" not in sys.modules:
        return False
    import torch.distributed as dist

    return isinstance(e, dist.DistError) or any(s in str(e) for s in _PEER_GONE)  # gloo raises RuntimeError
