"""Bound the image store of scripts/images.sh (standard library only).

    python3 scripts/image_prune.py NAME KEEP -- BUILDAH-COMMAND...

Keeps the KEEP newest builds of localhost/tuneroute/NAME (several checkouts share the store)
and every intermediate image whose layers a tagged image still stands on (buildah's layer
cache: a code change re-runs only the steps after the dependency install). Everything else
goes: without this, each trainer build would leave 7 GB behind.
"""

from __future__ import annotations

import json
import subprocess
import sys


def main() -> None:
    name, keep, sep, *buildah = sys.argv[1:]
    assert sep == "--", __doc__

    def run(*args: str) -> str:
        return subprocess.run([*buildah, *args], check=True, capture_output=True, text=True).stdout

    repo = f"localhost/tuneroute/{name}:"
    images = json.loads(run("images", "--all", "--json") or "[]")
    builds = sorted(
        (i for i in images if any(n.startswith(repo) for n in i.get("names") or [])),
        key=lambda i: i["created"],
        reverse=True,
    )
    for old in builds[int(keep) :]:
        print(f"removing the older build {' '.join(old['names'])}", file=sys.stderr)
        subprocess.run([*buildah, "rmi", "--force", old["id"]], capture_output=True)

    images = json.loads(run("images", "--all", "--json") or "[]")
    chains = {}
    for i in images:
        info = json.loads(run("inspect", "--type", "image", i["id"]))
        chains[i["id"]] = tuple((info.get("OCIv1", {}).get("rootfs") or {}).get("diff_ids") or [])
    tagged = [chains[i["id"]] for i in images if i.get("names")]
    unused = [
        i["id"]
        for i in images
        if not i.get("names") and not any(t[: len(chains[i["id"]])] == chains[i["id"]] for t in tagged)
    ]
    if unused:
        subprocess.run([*buildah, "rmi", *unused], capture_output=True)
        print(f"removed {len(unused)} intermediate images no build uses", file=sys.stderr)


if __name__ == "__main__":
    main()
