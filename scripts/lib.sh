# Shell helpers shared by the scripts and tests/cluster (source it; bash only).
#   progress LABEL CMD...      run CMD with its output in a log; say every 30 s how long it has run
#   ensure_packages PKG...     apt-get install the Debian packages that are missing
#   tuneroute_cache            the cache root outside the repo (~/.cache/tuneroute)
#   compile_bytecode VENV      write the .pyc files of VENV's packages, once per environment

tuneroute_cache() { echo "${TUNEROUTE_CACHE:-$HOME/.cache/tuneroute}"; }

# 75 -> "1m15s"
fmt_seconds() {
  local s=$1
  if ((s >= 60)); then echo "$((s / 60))m$((s % 60))s"; else echo "${s}s"; fi
}

# Long steps (Go builds, image builds, installs) never leave minutes of silence: the
# command's output goes to a log file, and a line with the elapsed time (and the log's
# last line) comes every PROGRESS_EVERY seconds. On failure the log's tail is shown.
progress() {
  local label=$1 logdir logf t0=$SECONDS pid rc=0 next last
  shift
  logdir="${TUNEROUTE_LOG_DIR:-$(tuneroute_cache)/logs}"
  mkdir -p "$logdir"
  logf="$logdir/$(echo "$label" | tr -c 'a-zA-Z0-9.\n-' '_' | cut -c1-60).log"
  echo "==> $label (log: $logf)" >&2
  "$@" >"$logf" 2>&1 </dev/null &
  pid=$!
  next=$((SECONDS + ${PROGRESS_EVERY:-30}))
  while kill -0 "$pid" 2>/dev/null; do
    sleep 1
    if ((SECONDS >= next)); then
      last=$(tail -n 1 "$logf" 2>/dev/null | tr -d '\r' | cut -c1-100)
      echo "    $label: $(fmt_seconds $((SECONDS - t0)))${last:+ | $last}" >&2
      next=$((SECONDS + ${PROGRESS_EVERY:-30}))
    fi
  done
  wait "$pid" || rc=$?
  if ((rc != 0)); then
    echo "!!! $label failed (exit $rc) after $(fmt_seconds $((SECONDS - t0))); last lines of $logf:" >&2
    tail -n 40 "$logf" >&2
    return "$rc"
  fi
  echo "    $label: done in $(fmt_seconds $((SECONDS - t0)))" >&2
}

# Install the Debian packages that are not installed yet (CI starts on a clean machine).
ensure_packages() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  if [ "$(id -u)" != 0 ]; then
    echo "missing Debian packages: ${missing[*]}; install them (as root: apt-get install ${missing[*]})" >&2
    return 1
  fi
  progress "apt-get install ${missing[*]}" \
    bash -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"' _ "${missing[@]}"
}

# uv installs no bytecode, and this machine kind sets PYTHONDONTWRITEBYTECODE=1, so without this
# every Python process compiles what it imports from source: torch, transformers, peft and trl
# take 16.6 s to import instead of 8.8 s, vLLM's server 21.9 s instead of 12.6 s, and the tests
# start hundreds of such processes. compileall writes the files whatever that variable says.
# Once per environment (a marker file), under a lock (parallel test workers may both ask).
compile_bytecode() {
  local venv=$1 site
  [ -f "$venv/.bytecode" ] && return 0
  site=$(echo "$venv"/lib/python3*/site-packages)
  (
    flock 9
    [ -f "$venv/.bytecode" ] && exit 0
    # a few test files in the wheels are for newer Pythons and do not compile: not an error here
    progress "compile the bytecode of $venv" bash -c '"$1/bin/python" -m compileall -q -j 0 "$2" || true' _ "$venv" "$site"
    touch "$venv/.bytecode"
  ) 9>"$venv/.bytecode.lock"
}
