"""Several ranks for real: torchrun processes on the CPU (gloo), a tiny random Qwen3-MoE, FSDP2.

Reference: one process, batch 4. Two ranks with batch 2 each see the same global batch (the Trainer
hands rank r every other micro-batch of the same shuffled order and normalises the loss by the
tokens of all ranks), so the loss curve and the adapter must match the reference. Tolerance: 1e-5
absolute on losses and adapter tensors (fp32; the ranks sum gradients in another order, measured
differences are below 1e-6). The model's router load-balancing loss is switched off
(router_aux_loss_coef 0): each rank computes it on its own micro-batch, a non-linear function of
the token-to-expert counts, so with it on no multi-rank run can equal one process.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from safetensors.torch import load_file

from tuneroute_testing.trainer_fixtures import save_tiny_model, trainer_config, trainer_events, write_config
from tuneroute_trainer.config import TrainerConfig
from tuneroute_trainer.train import checkpoint_dir

STEPS = 8
TOL = 1e-5


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = save_tiny_model("qwen3_moe", tmp_path_factory.mktemp("model") / "qwen3_moe")
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "router_aux_loss_coef": 0.0}))
    return path


def _config(model_dir: Path, out: Path, batch: int, **over) -> dict:
    return trainer_config(
        model_dir, out, training={"maxSteps": STEPS, "batchSize": batch}, checkpoint={"everySteps": 2}, **over
    )


def _losses(events: list[dict]) -> dict[int, float]:
    """Per-step losses (the run's closing line repeats the last step with the mean: skipped)."""
    out: dict[int, float] = {}
    for e in events:
        if e["event"] == "progress" and e["step"] not in out:
            out[e["step"]] = e["loss"]
    return out


def _adapter(out: Path) -> dict:
    return load_file(out / "adapter_model.safetensors")


def _assert_same_adapter(a: dict, b: dict) -> None:
    assert a.keys() == b.keys() and len(a) == 16  # q, v and both expert projections, A and B, 2 layers
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst < TOL, f"adapters differ by {worst}"


@pytest.fixture(scope="module")
def reference(model_dir, tmp_path_factory):
    """One process, batch 4: losses per step and the final adapter."""
    tmp = tmp_path_factory.mktemp("one")
    cfg = write_config(tmp / "config.json", _config(model_dir, tmp / "out", batch=4))
    run = subprocess.run(
        [sys.executable, "-m", "tuneroute_trainer", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    losses = _losses(trainer_events(run.stdout))
    assert sorted(losses) == list(range(1, STEPS + 1))
    return losses, _adapter(tmp / "out")


def _torchrun(*args: str, config: Path, env: dict | None = None, **kw) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "tuneroute_trainer.torchrun",
        *args,
        "-m",
        "tuneroute_trainer",
        "--config",
        str(config),
    ]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, **kw)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _assert_really_sharded(events: list[dict], ranks: int) -> None:
    """Each rank holds 1/ranks of the frozen base and of the LoRA factors (local shards, not the loss)."""
    reports = sorted((e for e in events if e["event"] == "sharded"), key=lambda e: e["rank"])
    assert [e["rank"] for e in reports] == list(range(ranks))
    for e in reports:
        for kind in ("frozen", "trainable"):
            assert e[kind]["local"] * ranks == pytest.approx(e[kind]["total"], rel=0.02), (kind, e)


def test_two_ranks_shard_the_model_and_match_one_process(model_dir, reference, tmp_path, termination_log):
    ref_losses, ref_adapter = reference
    out = tmp_path / "out"
    cfg = _config(model_dir, out, batch=2)
    proc = _torchrun("--standalone", "--nproc-per-node", "2", config=write_config(tmp_path / "config.json", cfg))
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-3000:]
    events = trainer_events(stdout)
    _assert_really_sharded(events, 2)
    losses = _losses(events)
    assert sorted(losses) == list(range(1, STEPS + 1))  # progress from rank 0 only: one line per step
    for step, loss in ref_losses.items():
        assert losses[step] == pytest.approx(loss, abs=TOL), step
    _assert_same_adapter(_adapter(out), ref_adapter)
    manifest = json.loads((out / "tuneroute-manifest.json").read_text())
    assert manifest["metrics"]["ranks"] == 2 and manifest["metrics"]["steps"] == STEPS

    ckpt = checkpoint_dir(TrainerConfig.model_validate(cfg)) / f"checkpoint-{STEPS}"
    assert json.loads((ckpt / "tuneroute-checkpoint.json").read_text()) == {"worldSize": 2}
    assert len(list((ckpt / "optimizer").glob("*.distcp"))) == 2  # each rank wrote its own optimizer shard
    assert (ckpt / "adapter_model.safetensors").is_file()  # a stock PEFT adapter, like one process writes

    # The same job resumed by one process: refused, naming the field, before any model loads.
    longer = {**cfg, "training": {**cfg["training"], "maxSteps": STEPS + 2}}
    run = subprocess.run(
        [sys.executable, "-m", "tuneroute_trainer", "--config", str(write_config(tmp_path / "c2.json", longer))],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 2
    assert termination_log.read_text().startswith(
        f"checkpoint.resume: checkpoint-{STEPS} was written by 2 rank(s) (nodes x GPUs) and this run has 1"
    )


def test_invalid_input_on_every_rank_exits_2_naming_the_rank(tmp_path, termination_log):
    proc = _torchrun("--standalone", "--nproc-per-node", "2", config=tmp_path / "missing.json")
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 2, stderr[-2000:]  # torchrun alone would exit 1: the Job could not fail fast
    message = termination_log.read_text()
    assert message.startswith(("rank 0: ", "rank 1: ")) and f"config: file {tmp_path}/missing.json not found" in message


def _two_nodes(config: Path, tmp_path: Path, attempt: int) -> list[subprocess.Popen]:
    """Two launchers ("pods" of an Indexed Job) meeting at a c10d rendezvous on loopback."""
    port = _free_port()
    procs = []
    for index in (0, 1):
        env = {
            **os.environ,
            "JOB_COMPLETION_INDEX": str(index),
            "TUNEROUTE_TERMINATION_LOG": str(tmp_path / f"termination-{attempt}-{index}"),
        }
        procs.append(
            _torchrun(
                "--nnodes=2",
                "--nproc-per-node=1",
                "--rdzv-backend=c10d",
                f"--rdzv-endpoint=127.0.0.1:{port}",
                f"--rdzv-id=attempt-{attempt}",
                "--max-restarts=0",
                config=config,
                env=env,
            )
        )
    return procs


def _rank_process(procs: list[subprocess.Popen], rank: int) -> tuple[int, psutil.Process]:
    """(index of the launcher, worker process) of global rank `rank` (c10d hands out ranks by arrival)."""
    for i, p in enumerate(procs):
        for child in psutil.Process(p.pid).children(recursive=True):
            try:
                if child.environ().get("RANK") == str(rank):
                    return i, child
            except psutil.Error:
                continue
    raise AssertionError(f"no worker with RANK={rank}")


def _read_until(procs: list[subprocess.Popen], stop) -> list[dict]:
    """Events of every launcher, read as they come, until `stop(event)` is true or all streams end."""
    sel = selectors.DefaultSelector()
    for p in procs:
        sel.register(p.stdout, selectors.EVENT_READ)
    events: list[dict] = []
    while sel.get_map():
        for key, _ in sel.select(timeout=600):
            line = key.fileobj.readline()
            if not line:
                sel.unregister(key.fileobj)
            elif line.startswith('{"event"'):
                events.append(json.loads(line))
                if stop(events[-1]):
                    return events
    return events


def test_two_nodes_killed_rank_fails_the_attempt_and_the_retry_resumes_on_every_rank(model_dir, reference, tmp_path):
    ref_losses, ref_adapter = reference
    out = tmp_path / "out"
    config = write_config(tmp_path / "config.json", _config(model_dir, out, batch=2))

    # Attempt 1: once checkpoint-2 is complete, rank 1 dies (OOM killer, lost node).
    procs = _two_nodes(config, tmp_path, attempt=1)
    try:
        events = _read_until(procs, lambda e: e["event"] == "progress" and e["step"] >= 3)
        _assert_really_sharded(events, 2)
        killed, victim = _rank_process(procs, 1)
        victim.send_signal(signal.SIGKILL)
        codes = [p.wait(timeout=300) for p in procs]
    finally:
        for p in procs:
            p.kill()
    attempt1 = _losses(events)
    other = 1 - killed
    assert (
        codes[killed] == 137 and codes[other] == 1
    )  # the attempt fails everywhere: the survivor does not wait for a lost peer
    assert (tmp_path / f"termination-1-{killed}").read_text().startswith(f"rank 1 (pod {killed}): killed by SIGKILL")
    assert (
        (tmp_path / f"termination-1-{other}")
        .read_text()
        .startswith(f"rank 0 (pod {other}): lost contact with the other ranks")
    )
    assert not (out / "tuneroute-manifest.json").exists()

    # Attempt 2 (the operator's retry: every rank restarts, new rendezvous): resumes from the last checkpoint.
    procs = _two_nodes(config, tmp_path, attempt=2)
    try:
        events = _read_until(procs, lambda e: False)
        codes = [p.wait(timeout=300) for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert codes == [0, 0], [p.stderr.read()[-2000:] for p in procs]
    _assert_really_sharded(events, 2)  # both ranks came back
    manifest = json.loads((out / "tuneroute-manifest.json").read_text())
    resumed = int(manifest["resumedFrom"].rsplit("-", 1)[1])
    assert resumed >= 2 and resumed % 2 == 0
    attempt2 = _losses(events)
    assert min(attempt2) == resumed + 1 and max(attempt2) == STEPS
    # The stitched curve and the final adapter are the uninterrupted single-process run's.
    curve = {**{s: v for s, v in attempt1.items() if s <= resumed}, **attempt2}
    assert sorted(curve) == list(range(1, STEPS + 1))
    for step, loss in ref_losses.items():
        assert curve[step] == pytest.approx(loss, abs=TOL), step
    _assert_same_adapter(_adapter(out), ref_adapter)
