"""User rewards: a function from a Python file, or an HTTP endpoint that scores a batch."""

from __future__ import annotations

import importlib.util
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import InputError

log = logging.getLogger("tuneroute_trainer")


class RewardFailed(Exception):
    """A user reward kept failing during training (the job fails with this message, exit 1)."""


def load_function(path: str, function: str, field: str) -> Callable:
    """Import `function` from the Python file at `path`; every way that can fail is an InputError on `field`."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{field}.path", f"file {path} not found")
    name = f"tuneroute_user_reward_{abs(hash(str(p.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, p)
    if spec is None or spec.loader is None:
        raise InputError(f"{field}.path", f"{path} is not a Python file")
    try:
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses and pickling look modules up by name
        spec.loader.exec_module(module)
    except BaseException as e:  # SyntaxError, ImportError, anything its top level raises (even SystemExit)
        sys.modules.pop(name, None)
        raise InputError(f"{field}.path", f"{path} does not import: {type(e).__name__}: {e}") from e
    fn = getattr(module, function, None)
    if fn is None:
        found = sorted(k for k, v in vars(module).items() if callable(v) and not k.startswith("_"))
        raise InputError(
            f"{field}.function", f"{path} has no function {function!r}; it defines {', '.join(found) or 'nothing'}"
        )
    if not callable(fn):
        raise InputError(f"{field}.function", f"{function!r} in {path} is not callable")
    return fn


def check_scores(scores: Any, n: int) -> list[float | None]:
    """A reward's output must be one number (or None) per completion; RewardFailed says what is wrong."""
    if not isinstance(scores, list | tuple) or len(scores) != n:
        got = f"{len(scores)} values" if isinstance(scores, list | tuple) else type(scores).__name__
        raise RewardFailed(f"expected a list of {n} numbers (or nulls), got {got}")
    out: list[float | None] = []
    for s in scores:
        if s is None:
            out.append(None)
        elif isinstance(s, int | float) and not isinstance(s, bool) and s == s and abs(s) != float("inf"):
            out.append(float(s))
        else:
            raise RewardFailed(f"every value must be a finite number or null, got {s!r}")
    return out


class HttpScorer:
    """POST {"prompts", "completions", "references"} -> {"rewards": [...]}, with failures counted.

    A batch the endpoint cannot score (timeout, connection error, HTTP error, malformed answer) gets None for
    every completion, which trl leaves out of the reward sum (never a silent 0); after `max_failures` such
    batches in a row the job fails with the last error.
    """

    def __init__(self, url: str, timeout: float, max_failures: int, who: str, session=None):
        import requests

        self.url, self.timeout, self.max_failures, self.who = url, timeout, max_failures, who
        self.session = session or requests.Session()
        self.errors = 0
        self.consecutive = 0
        self.last_error: str | None = None
        self.seconds = 0.0

    def request(self, prompts: list, completions: list[str], references: list) -> list[float | None]:
        """One scoring call; raises RewardFailed saying what went wrong (the pre-flight check uses it as is)."""
        import requests

        body = {"prompts": prompts, "completions": completions, "references": references}
        t0 = time.monotonic()
        try:
            r = self.session.post(self.url, json=body, timeout=self.timeout)
            r.raise_for_status()
            data = r.json()
        except requests.Timeout as e:
            raise RewardFailed(f"no answer from {self.url} within {self.timeout:g} s") from e
        except requests.RequestException as e:
            raise RewardFailed(f"{type(e).__name__}: {e}") from e
        except ValueError as e:
            raise RewardFailed(f"the answer from {self.url} is not JSON") from e
        finally:
            self.seconds += time.monotonic() - t0
        if not isinstance(data, dict) or "rewards" not in data:
            raise RewardFailed(f'the answer from {self.url} has no "rewards" list')
        return check_scores(data["rewards"], len(completions))

    def __call__(self, prompts: list, completions: list[str], references: list) -> list[float | None]:
        try:
            scores = self.request(prompts, completions, references)
        except RewardFailed as e:
            self.errors += 1
            self.consecutive += 1
            self.last_error = str(e)
            log.warning("reward %s failed (%d in a row, %d in all): %s", self.who, self.consecutive, self.errors, e)
            if self.consecutive >= self.max_failures:
                raise RewardFailed(
                    f"{self.who}: {self.consecutive} batches in a row could not be scored; last: {e}"
                ) from e
            return [None] * len(completions)
        self.consecutive = 0
        return scores
