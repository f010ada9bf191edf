"""What goes into an image built from a Dockerfile, for scripts/images.sh (standard library only).

    python3 scripts/image_inputs.py from DOCKERFILE           the FROM images, one a line
    python3 scripts/image_inputs.py hash DOCKERFILE CONTEXT   sha256 of the Dockerfile and of every
                                                              file its COPY/ADD lines take from CONTEXT

The hash is the image's cache key: the Dockerfile itself names what it copies, so a new COPY
line needs no second list here. Files are the ones git sees (tracked, or untracked and not
ignored) minus the context's .dockerignore, as `docker build` would send them.
"""

from __future__ import annotations

import fnmatch
import hashlib
import shlex
import subprocess
import sys
from pathlib import Path


def instructions(dockerfile: Path) -> list[list[str]]:
    """Each instruction as its words, continuation lines joined, comments dropped."""
    out: list[list[str]] = []
    current = ""
    for raw in dockerfile.read_text().splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        out.append(shlex.split(current, comments=False, posix=True))
        current = ""
    return out


def from_images(dockerfile: Path) -> list[str]:
    stages: set[str] = set()
    images: list[str] = []
    for words in instructions(dockerfile):
        if words[0].upper() != "FROM":
            continue
        args = [w for w in words[1:] if not w.startswith("--")]
        if args[0] not in stages and args[0] != "scratch" and args[0] not in images:
            images.append(args[0])
        if len(args) >= 3 and args[1].upper() == "AS":
            stages.add(args[2])
    return images


def copy_sources(dockerfile: Path) -> list[str]:
    sources: list[str] = []
    for words in instructions(dockerfile):
        if words[0].upper() not in ("COPY", "ADD"):
            continue
        if any(w.startswith("--from=") for w in words):
            continue  # from another stage, not from the context
        args = [w for w in words[1:] if not w.startswith("--")]
        sources.extend(args[:-1])
    return sources


def ignored(rel: str, patterns: list[str]) -> bool:
    parts = rel.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        candidates = {pattern, pattern.removeprefix("**/")}
        if any(fnmatch.fnmatchcase(p, c) for p in prefixes for c in candidates):
            result = not negate
    return result


def context_files(context: Path) -> list[str]:
    listed = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=context,
            check=True,
            capture_output=True,
        )
        .stdout.decode()
        .split("\0")
    )
    ignore = context / ".dockerignore"
    patterns = (
        [p.strip() for p in ignore.read_text().splitlines() if p.strip() and not p.startswith("#")]
        if ignore.exists()
        else []
    )
    return sorted(f for f in listed if f and (context / f).is_file() and not ignored(f, patterns))


def input_hash(dockerfile: Path, context: Path) -> str:
    files = context_files(context)
    wanted: list[str] = []
    for src in copy_sources(dockerfile):
        src = src.strip("/").removeprefix("./")
        if src in ("", "."):
            wanted.extend(files)
            continue
        matched = [f for f in files if fnmatch.fnmatchcase(f, src) or f.startswith(src + "/")]
        if not matched:
            sys.exit(f"{dockerfile}: COPY source {src!r} matches no file in {context}")
        wanted.extend(matched)
    h = hashlib.sha256(dockerfile.read_bytes())
    for f in sorted(set(wanted)):
        h.update(f.encode() + b"\0" + hashlib.sha256((context / f).read_bytes()).digest())
    return h.hexdigest()


def main() -> None:
    cmd, *args = sys.argv[1:]
    if cmd == "from":
        print("\n".join(from_images(Path(args[0]))))
    elif cmd == "hash":
        print(input_hash(Path(args[0]), Path(args[1]).resolve()))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
