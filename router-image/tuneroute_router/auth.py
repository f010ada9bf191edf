"""API keys from a mounted Secret, checked in constant time. Keys are never logged."""

from __future__ import annotations

import hmac
import os
from collections.abc import Mapping
from pathlib import Path


class KeysError(ValueError):
    pass


def load_keys(path: str) -> frozenset[bytes]:
    """A directory (one key per file, as a Secret volume mounts it) or a file (one key a line)."""
    p = Path(path)
    try:
        if p.is_dir():
            # Secret volumes hold ..data/..<timestamp> helpers next to the key symlinks
            texts = [f.read_text() for f in sorted(p.iterdir()) if not f.name.startswith(".") and f.is_file()]
            keys = [t.strip() for t in texts]
        else:
            keys = [ln.strip() for ln in p.read_text().splitlines() if not ln.lstrip().startswith("#")]
    except OSError as e:
        raise KeysError(f"auth.apiKeysPath {path}: cannot read keys ({e.strerror or type(e).__name__})") from None
    out = frozenset(k.encode() for k in keys if k)
    if not out:
        raise KeysError(f"auth.apiKeysPath {path}: no API keys found")
    return out


def keys_signature(path: str | None) -> tuple:
    """Cheap change detector for the keys mount (names, sizes, mtimes)."""
    if path is None:
        return ()
    p = Path(path)
    try:
        if p.is_dir():
            return tuple(
                (f.name, st.st_size, st.st_mtime_ns)
                for f in sorted(p.iterdir())
                if not f.name.startswith(".")
                for st in [os.stat(f)]
            )
        st = os.stat(p)
        return ((p.name, st.st_size, st.st_mtime_ns),)
    except OSError:
        return ("unreadable",)


def presented_key(headers: Mapping[str, str]) -> bytes | None:
    auth = headers.get("authorization")
    if auth and auth[:7].lower() == "bearer ":
        return auth[7:].strip().encode()
    k = headers.get("x-api-key") or headers.get("api-key")
    return k.strip().encode() if k else None


def allowed(keys: frozenset[bytes] | None, headers: Mapping[str, str]) -> bool:
    """Whether a request with these headers may pass (always, when no keys are configured)."""
    return keys is None or check(keys, presented_key(headers))


def check(keys: frozenset[bytes], presented: bytes | None) -> bool:
    if presented is None:
        return False
    ok = False
    for k in keys:  # no early exit: the time taken does not depend on which key matched
        ok |= hmac.compare_digest(k, presented)
    return ok
