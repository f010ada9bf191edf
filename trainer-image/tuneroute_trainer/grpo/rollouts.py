"""Rollout engines: sample G completions per prompt with the sampled tokens' log-probabilities, and take each
new policy version from the trainer.

- `TransformersEngine` generates with `model.generate` on its own copy of the model (base + LoRA), so a
  background thread can generate while the trainer updates the policy; a new version is an in-memory copy
  of the adapter tensors. For tiny models and tests.
- `VllmEngine` asks a vLLM OpenAI server. Each policy version is saved as a stock PEFT adapter directory
  in a folder the server can read and loaded at run time under a new name, `<run>-v<N>` (vLLM keys its prefix
  cache by adapter name, so reusing a name would serve stale KV blocks); full weights are never merged.
  Versions older than the staleness window are unloaded and their files removed.

Log-probabilities are of the temperature-scaled distribution, which is what trl's trainers compare against
(a vLLM server must run with `--logprobs-mode processed_logprobs`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger("tuneroute_trainer")


@dataclass
class Completion:
    token_ids: list[int]
    logprobs: list[float]


def adapter_state(model) -> dict[str, torch.Tensor]:
    """The LoRA tensors of a PEFT model (detached CPU copies), keyed by parameter name."""
    return {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if "lora_" in n}


def run_name(adapter_name: str) -> str:
    """Unique per process start, so a restarted run never republishes a name a server still holds."""
    return f"{adapter_name}-{uuid.uuid4().hex[:6]}"


class TransformersEngine:
    """Generation with transformers on a private copy of the policy."""

    def __init__(self, model, tokenizer, max_new_tokens: int, temperature: float, eos_token_ids: list[int]):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_new_tokens, self.temperature = max_new_tokens, temperature
        self.eos_token_ids = eos_token_ids
        self.lock = threading.Lock()  # a version is swapped in between two generate calls, never during one
        self.version = 0

    def publish(self, state: dict[str, torch.Tensor], version: int) -> None:
        params = dict(self.model.named_parameters())
        with self.lock, torch.no_grad():
            for name, tensor in state.items():
                params[name].copy_(tensor)
            self.version = version

    @torch.no_grad()
    def generate(self, prompt_ids: list[list[int]], n: int) -> tuple[list[list[Completion]], int]:
        """n completions per prompt, and the policy version that produced them."""
        pad = self.tokenizer.pad_token_id
        width = max(len(p) for p in prompt_ids)
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompt_ids])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompt_ids])
        device = next(self.model.parameters()).device
        with self.lock:
            out = self.model.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                do_sample=True,
                temperature=self.temperature,
                top_k=0,
                top_p=1.0,
                max_new_tokens=self.max_new_tokens,
                num_return_sequences=n,
                output_scores=True,
                return_dict_in_generate=True,
                pad_token_id=pad,
                eos_token_id=self.eos_token_ids,
            )
            version = self.version
        tokens = out.sequences[:, width:].cpu()
        # scores are the processed (temperature-scaled) logits of each step
        logps = torch.stack(out.scores, dim=1).float().log_softmax(-1).cpu()
        chosen = logps.gather(-1, tokens[..., None])[..., 0]
        groups: list[list[Completion]] = []
        for i in range(len(prompt_ids)):
            group = []
            for j in range(n):
                row = tokens[i * n + j].tolist()
                end = next((k + 1 for k, t in enumerate(row) if t in self.eos_token_ids), len(row))
                group.append(Completion(row[:end], chosen[i * n + j, :end].tolist()))
            groups.append(group)
        return groups, version


class VllmEngine:
    """Generation by a vLLM OpenAI server that loads each policy version as a LoRA adapter from shared files."""

    def __init__(
        self,
        url: str,
        adapter_dir: str,
        run: str,
        max_new_tokens: int,
        temperature: float,
        keep_versions: int,
        timeout: float = 300.0,
        session=None,
    ):
        import requests

        self.url = url.rstrip("/")
        self.adapter_dir = Path(adapter_dir)
        self.run = run
        self.max_new_tokens, self.temperature = max_new_tokens, temperature
        self.keep_versions = max(keep_versions, 1)
        self.timeout = timeout
        self.session = session or requests.Session()
        self.version = 0
        self.published: list[int] = []

    def name(self, version: int) -> str:
        return f"{self.run}-v{version}"

    def check(self) -> None:
        """The server answers and serves models (raises with what went wrong)."""
        r = self.session.get(f"{self.url}/v1/models", timeout=30)
        r.raise_for_status()

    def publish(self, model, version: int) -> None:
        """Save the adapter under `<adapter_dir>/<run>-v<N>` (atomically) and load it into the server."""
        name = self.name(version)
        self.adapter_dir.mkdir(parents=True, exist_ok=True)
        target = self.adapter_dir / name
        tmp = self.adapter_dir / f".{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
        os.replace(tmp, target)
        body: dict[str, Any] = {"lora_name": name, "lora_path": str(target.resolve())}
        if getattr(model.peft_config[model.active_adapter], "target_parameters", None):
            body["is_3d_lora_weight"] = True  # fused MoE expert LoRA (server needs --enable-mixed-moe-lora-format)
        r = self.session.post(f"{self.url}/v1/load_lora_adapter", json=body, timeout=self.timeout)
        if r.status_code != 200:
            raise RuntimeError(f"vLLM refused adapter {name}: HTTP {r.status_code}: {r.text[:300]}")
        self.version = version
        self.published.append(version)
        while len(self.published) > self.keep_versions:  # out of the staleness window: nobody asks for it now
            old = self.published.pop(0)
            self.session.post(f"{self.url}/v1/unload_lora_adapter", json={"lora_name": self.name(old)}, timeout=60)
            shutil.rmtree(self.adapter_dir / self.name(old), ignore_errors=True)

    def generate(self, prompt_ids: list[list[int]], n: int) -> tuple[list[list[Completion]], int]:
        version = self.version
        body = {
            "model": self.name(version),
            "prompt": prompt_ids,
            "n": n,
            "max_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "top_p": 1.0,
            "top_k": 0,
            "logprobs": 0,
            "return_token_ids": True,
        }
        t0 = time.monotonic()
        r = self.session.post(f"{self.url}/v1/completions", json=body, timeout=self.timeout)
        if r.status_code != 200:
            raise RuntimeError(f"vLLM generation failed: HTTP {r.status_code}: {r.text[:300]}")
        choices = sorted(r.json()["choices"], key=lambda c: c["index"])
        log.debug("vLLM generated %d completions in %.2f s", len(choices), time.monotonic() - t0)
        groups = [
            [Completion(c["token_ids"], c["logprobs"]["token_logprobs"]) for c in choices[i * n : (i + 1) * n]]
            for i in range(len(prompt_ids))
        ]
        return groups, version

    def close(self) -> None:
        for v in self.published:
            with contextlib.suppress(Exception):  # the server may be gone already; the files go anyway
                self.session.post(f"{self.url}/v1/unload_lora_adapter", json={"lora_name": self.name(v)}, timeout=10)
            shutil.rmtree(self.adapter_dir / self.name(v), ignore_errors=True)
