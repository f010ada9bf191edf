"""torchrun, reporting the rank that failed: its exit code and its own one-line message.

    python -m tuneroute_trainer.torchrun [torchrun options] -m tuneroute_trainer --config FILE

takes exactly torchrun's arguments and runs torch's own launcher (elastic agent, c10d rendezvous).
Only the ending differs: torchrun exits 1 whatever its workers did, so a pod could not tell "invalid
input" (2: the Job's podFailurePolicy fails fast) or "preempted, checkpoint saved" (143) from a crash.
Here the pod exits with the code of the rank that failed first and writes
`rank R/N: <that rank's message>` to its termination-message file, which the operator shows.

In an Indexed Job (JOB_COMPLETION_INDEX set) the pod of index 0 hosts the rendezvous store, unless
--rdzv-conf says otherwise: torch would guess it from DNS, which may not list a starting pod yet.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
from pathlib import Path

from .cli import RANK_MESSAGES_ENV, STOPPED, TERMINATION_LOG_ENV


def _with_store_host(argv: list[str]) -> list[str]:
    index = os.environ.get("JOB_COMPLETION_INDEX")
    if index is None or any(a.startswith(("--rdzv-conf", "--rdzv_conf")) and "is_host" in a for a in argv):
        return argv
    return [f"--rdzv-conf=is_host={1 if index == '0' else 0}", *argv]


def _exit_code(code: int) -> int:
    return 128 - code if code < 0 else code  # a worker killed by signal S: the shell's 128 + S


def _describe(rank: int, code: int, messages: Path) -> str:
    try:
        message = (messages / f"rank-{rank}").read_text().strip()
    except OSError:
        message = ""
    if not message:
        if code < 0:
            message = f"killed by {signal.Signals(-code).name}"
            if code == -signal.SIGKILL:
                message += " (out of memory?)"
        else:
            message = f"exited with code {code}"
    return message


def _terminate(line: str, code: int) -> int:
    print(f"error: {line}", file=sys.stderr, flush=True)
    try:
        with open(os.environ.get(TERMINATION_LOG_ENV, "/dev/termination-log"), "w") as f:
            f.write(line[:4000] + "\n")
    except OSError:
        pass
    return code


def main(argv: list[str] | None = None) -> int:
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    args = parse_args(_with_store_host(list(sys.argv[1:] if argv is None else argv)))
    messages = Path(tempfile.mkdtemp(prefix="tuneroute-ranks-"))
    os.environ[RANK_MESSAGES_ENV] = str(messages)  # the workers inherit it
    try:
        run(args)
    except ChildFailedError as e:
        rank, failure = e.get_first_failure()
        node = os.environ.get("JOB_COMPLETION_INDEX")
        where = f"rank {rank}" + (f" (pod {node})" if node is not None else "")
        return _terminate(f"{where}: {_describe(rank, failure.exitcode, messages)}", _exit_code(failure.exitcode))
    except SignalException as e:  # this pod was told to stop; its workers had the grace period to checkpoint
        said = sorted(messages.glob("rank-*"), key=lambda p: int(p.name.removeprefix("rank-")))
        line = next((t for p in said if (t := p.read_text().strip())), f"{STOPPED} {signal.Signals(e.sigval).name}")
        return _terminate(line, 128 + int(e.sigval))
    return 0


if __name__ == "__main__":
    sys.exit(main())
