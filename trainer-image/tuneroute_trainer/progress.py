"""Training progress: one log line per logged step and throttled patches of the FineTuneJob's status."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

from .config import Progress, ReportSpec, TrainerStatus
from .contract import FINETUNEJOBS, GROUP, VERSION, now

log = logging.getLogger("tuneroute_trainer")


def progress_snapshot(
    step: int,
    total: int,
    loss: float | None,
    tokens: int,
    elapsed: float,
    epoch: float | None,
    start_step: int = 0,
    start_tokens: int = 0,
) -> Progress:
    """Pure: status.progress from counters; rates use this process's share only."""
    done = max(step - start_step, 0)
    rate = done / elapsed if elapsed > 0 else 0.0
    tps = (tokens - start_tokens) / elapsed if elapsed > 0 else 0.0
    return Progress(
        step=step,
        total_steps=total,
        percent=round(100.0 * step / total, 2) if total else 0.0,
        loss=None if loss is None else round(float(loss), 6),
        tokens_per_second=round(tps, 1),
        eta_seconds=round((total - step) / rate, 1) if rate > 0 else None,
        epoch=None if epoch is None else round(float(epoch), 4),
        updated_at=now(),
    )


class StatusReporter:
    """Merge-patches status.progress of one FineTuneJob; throttled, and failures are logged, never raised."""

    def __init__(self, spec: ReportSpec, api: Any = None, clock: Callable[[], float] = time.monotonic):
        self.spec, self._api, self._clock = spec, api, clock
        self._last: float | None = None

    def _client(self):
        if self._api is None:
            from kubernetes import client, config

            try:
                config.load_incluster_config()
            except config.ConfigException:  # outside a pod (local runs, the demo): the kubeconfig
                config.load_kube_config()
            self._api = client.CustomObjectsApi()
        return self._api

    def report(self, progress: Progress, force: bool = False) -> bool:
        t = self._clock()
        if not force and self._last is not None and t - self._last < self.spec.interval_seconds:
            return False
        self._last = t
        return self.patch(TrainerStatus(progress=progress))

    def patch(self, status: TrainerStatus) -> bool:
        """Merge-patch the status fields the training pod owns (progress, routingProfile); never raises."""
        try:
            self._client().patch_namespaced_custom_object_status(
                GROUP,
                VERSION,
                self.spec.namespace,
                FINETUNEJOBS,
                self.spec.name,
                {"status": status.wire()},
                _content_type="application/merge-patch+json",
            )
            return True
        except Exception as e:  # the job must not die because the API server hiccups
            log.warning("status patch of %s/%s failed: %s", self.spec.namespace, self.spec.name, e)
            return False


def make_callback(reporter: StatusReporter | None):
    """Progress line + status patch per logged step; `callback.extra(logs)` adds method-specific Progress fields."""
    from transformers import TrainerCallback

    class ProgressCallback(TrainerCallback):
        extra = None

        def on_train_begin(self, args, state, control, **kw):
            self.t0, self.step0, self.tok0 = time.monotonic(), state.global_step, state.num_input_tokens_seen
            self.last = None

        def on_log(self, args, state, control, logs=None, **kw):
            logs = logs or {}
            if "eval_loss" in logs:
                return  # the held-out evaluation after training is not a training step
            loss = logs.get("loss", logs.get("train_loss"))
            snap = progress_snapshot(
                state.global_step,
                state.max_steps,
                loss,
                state.num_input_tokens_seen,
                time.monotonic() - self.t0,
                state.epoch,
                self.step0,
                self.tok0,
            )
            if self.extra is not None:
                snap = snap.model_copy(update=self.extra(logs))
            self.last = snap
            print(json.dumps({"event": "progress", **snap.wire()}), file=sys.stdout, flush=True)
            if reporter is not None:
                reporter.report(snap, force=state.global_step >= state.max_steps)

    return ProgressCallback()
