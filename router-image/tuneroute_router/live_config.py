"""The config in effect and everything derived from it, swapped whole when its file changes.

Polling, not inotify: a ConfigMap update is a symlink swap of the parent directory, which a
content hash sees reliably. The API keys mount is watched the same way, so rotated keys apply
without a restart. A config that fails validation is refused and the last good one serves on.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from . import auth
from .accounting import strongest
from .adapters import EMBEDDER, AdapterMatcher, decode
from .classifier import Classifier, ExampleIndex
from .config import ConfigError, PoolModel, RouterConfig, load_config
from .dispatch import Backend, sync_backends
from .metrics import Metrics

log = logging.getLogger("tuneroute.config")


@dataclass(frozen=True)
class State:
    """One loaded config and everything derived from it."""

    cfg: RouterConfig
    backends: dict[str, Backend]  # live circuit and concurrency state, kept across reloads
    keys: dict[bytes, str] | None  # key -> its name; None: no authentication
    examples: ExampleIndex | None  # the route's example prompts, embedded (needs the classifier)
    strongest: PoolModel  # baseline for "cost saved"
    signature: tuple  # (config file hash, key files' signatures) this state was built from
    adapters: AdapterMatcher | None = None  # the route's adapters' routing profiles (needs the classifier)


def examples_index(cfg: RouterConfig, clf: Classifier | None) -> ExampleIndex | None:
    if clf is None or not cfg.policy.examples:
        return None
    grouped: dict[int, list[str]] = {}
    for e in cfg.policy.examples:
        grouped.setdefault(e.tier, []).extend(e.prompts)
    return ExampleIndex(clf.embedder, grouped)


def adapter_matcher(cfg: RouterConfig, clf: Classifier | None) -> AdapterMatcher | None:
    """A model per adapter whose profile this router can read (same embedder) and that beat its base."""
    if clf is None:
        return None
    profiles = {}
    for m in cfg.pool:
        p = m.profile
        if p is None or p.embedder != EMBEDDER or not p.beats_base:
            continue
        try:
            profiles[m.name] = decode(p.embeddings, clf.embedder.dim)
        except ValueError as e:
            log.warning("routing profile of %s is unreadable, not used: %s", m.name, e)
    return AdapterMatcher.build(profiles, clf.embedder) if profiles else None


def _key_files(cfg: RouterConfig | None) -> tuple:
    """Signatures of the key files a config reads: the clients' keys, each backend's key."""
    if cfg is None:
        return ()
    paths = [cfg.auth.api_keys_path] + [m.api_key_path for m in cfg.pool if m.api_key_path]
    return tuple(auth.keys_signature(p) for p in paths)


class LiveConfig:
    def __init__(self, path: str | Path, metrics: Metrics):
        self.path = Path(path)
        self.metrics = metrics
        self.classifier: Classifier | None = None
        self._refused: tuple | None = None  # signature of the last refused config: not retried
        # Fail fast at start: a pod with an unusable config should crash, not serve.
        self.state = self._build(self._signature(None), None)

    def _signature(self, cfg: RouterConfig | None) -> tuple:
        """The config file's hash, and the signatures of the key files `cfg` (the config in effect) reads."""
        try:
            digest = hashlib.sha256(self.path.read_bytes()).hexdigest()
        except OSError:
            return ("unreadable",)
        return (digest, *_key_files(cfg))

    def _build(self, signature: tuple, old: State | None) -> State:
        cfg = load_config(self.path)
        keys = auth.load_keys(cfg.auth.api_keys_path) if cfg.auth.api_keys_path else None
        backend_keys = {
            m.name: auth.load_backend_key(m.api_key_path, f"pool[{i}].apiKeyPath")
            for i, m in enumerate(cfg.pool)
            if m.api_key_path
        }
        backends = sync_backends(old.backends if old else {}, cfg.pool, cfg.dispatch, backend_keys)
        # the signature again with this config's key files, so that key rotation is noticed
        sig = (signature[0], *_key_files(cfg))
        clf = self.classifier
        return State(cfg, backends, keys, examples_index(cfg, clf), strongest(cfg.pool), sig, adapter_matcher(cfg, clf))

    def reload(self, force: bool = False) -> bool | None:
        """Reload when the file or keys changed. True: swapped; False: refused; None: unchanged."""
        sig = self._signature(self.state.cfg)
        if not force and sig in (self.state.signature, self._refused):
            return None
        try:
            new = self._build(sig, self.state)
        except (ConfigError, auth.KeysError) as e:
            self._refused = sig
            self.metrics.reloads.labels("refused").inc()
            log.error("config reload refused, keeping the previous config: %s", e)
            return False
        self.state, self._refused = new, None
        self.metrics.reloads.labels("ok").inc()
        log.info("config reloaded: %d pool models", len(new.cfg.pool))
        return True

    async def watch(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await asyncio.to_thread(self.reload)
            except Exception:  # never let the watcher die
                log.exception("config watcher error")

    async def use_classifier(self, clf: Classifier) -> None:
        """Embed the route's examples (and fit its adapters' profiles) with the classifier that has
        just loaded, and keep it for later reloads. The config may have been reloaded meanwhile: examples go to the one read."""
        st = self.state
        examples = await asyncio.to_thread(examples_index, st.cfg, clf)
        adapters = await asyncio.to_thread(adapter_matcher, st.cfg, clf)
        self.classifier = clf
        if self.state is st:
            self.state = dataclasses.replace(st, examples=examples, adapters=adapters)
        else:
            await asyncio.to_thread(self.reload, True)
