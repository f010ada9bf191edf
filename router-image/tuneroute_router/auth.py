"""API keys from a mounted Secret, checked in constant time. Keys are never logged."""

from __future__ import annotations

import hmac
import os
from collections.abc import Mapping, Sequence
from pathlib import Path


class KeysError(ValueError):
    pass


def load_keys(path: str) -> dict[bytes, str]:
    """Each key and its name: a directory (one key per file, as a Secret volume mounts it; the
    name is the file's, i.e. the Secret's key) or a file (one key a line; named file:line)."""
    p = Path(path)
    try:
        if p.is_dir():
            # Secret volumes hold ..data/..<timestamp> helpers next to the key symlinks
            named = [(f.name, f.read_text()) for f in sorted(p.iterdir()) if not f.name.startswith(".") and f.is_file()]
        else:
            lines = enumerate(p.read_text().splitlines(), 1)
            named = [(f"{p.name}:{i}", ln) for i, ln in lines if not ln.lstrip().startswith("#")]
    except OSError as e:
        raise KeysError(f"auth.apiKeysPath {path}: cannot read keys ({e.strerror or type(e).__name__})") from None
    out = {text.strip().encode(): name for name, text in named if text.strip()}
    if not out:
        raise KeysError(f"auth.apiKeysPath {path}: no API keys found")
    return out


def load_backend_key(path: str, where: str) -> str:
    """The API key a backend expects, from its mounted Secret key (`where` names the config field)."""
    try:
        key = Path(path).read_text().strip()
    except OSError as e:
        raise KeysError(
            f"{where} {path}: cannot read the backend's API key ({e.strerror or type(e).__name__})"
        ) from None
    if not key or any(c in key for c in "\r\n"):
        raise KeysError(f"{where} {path}: must hold one API key on one line")
    return key


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


OPEN = ""  # the caller of a route without authentication


def caller(keys: Mapping[bytes, str] | None, headers: Mapping[str, str]) -> str | None:
    """The name of the key a request presents (OPEN when no keys are configured); None: refused."""
    if keys is None:
        return OPEN
    return identify(keys, presented_key(headers))


def allowed(keys: Mapping[bytes, str] | None, headers: Mapping[str, str]) -> bool:
    """Whether a request with these headers may pass (always, when no keys are configured)."""
    return caller(keys, headers) is not None


def identify(keys: Mapping[bytes, str], presented: bytes | None) -> str | None:
    if presented is None:
        return None
    found = None
    for k, name in keys.items():  # no early exit: the time taken does not depend on which key matched
        if hmac.compare_digest(k, presented):
            found = name
    return found


def may_use(allowed_models: Mapping[str, Sequence[str]], who: str, model: str) -> bool:
    """Whether key `who` may ask for `model` (a key without an allow-list may ask for any)."""
    return who not in allowed_models or model in allowed_models[who]
