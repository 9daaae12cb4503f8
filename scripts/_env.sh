# Shared by scripts/serve and scripts/test: make .venv (Python >= 3.11) and install livesrv into it.
# Sourced, not run. Uses a venv so it works on Debian's externally-managed system Python too.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${LIVESRV_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi; }

apt_install() {  # apt_install PKG... : install Debian packages, once, when we can
    command -v apt-get >/dev/null || { echo "livesrv: please install: $*" >&2; return 1; }
    [ -n "${_APT_UPDATED:-}" ] || { as_root apt-get update -qq; _APT_UPDATED=1; }
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

ensure_venv() {  # ensure_venv EXTRAS : e.g. "" or "[test]"
    "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
        echo "livesrv needs Python >= 3.11 (set PYTHON=/path/to/python3.11)" >&2; exit 1; }
    if [ ! -x "$VENV/bin/python" ]; then
        "$PY" -m venv "$VENV" 2>/dev/null || { apt_install python3-venv && "$PY" -m venv "$VENV"; }
    fi
    local stamp="$VENV/.installed$1"
    if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
        "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$ROOT$1"
        touch "$stamp"
    fi
}

install_players() {  # install_players [required] : the web pages' players (mpegts.js, hls.js), from npm by name
    # and locked version, into src/livesrv/web/vendor/node_modules (gitignored; served as /livesrv/vendor/...).
    local dir="$ROOT/src/livesrv/web/vendor"
    if [ -f "$dir/node_modules/.package-lock.json" ] && [ ! "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]; then
        return 0
    fi
    if ! command -v npm >/dev/null; then
        [ "${1:-}" = required ] && { echo "livesrv: npm is needed for the web players" >&2; return 1; }
        echo "livesrv: npm not found: the web pages will play HLS with the browser's own player only (no HTTP-FLV," \
             "higher latency). Install npm (apt-get install npm) and run scripts/serve again." >&2
        return 0
    fi
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null) || {
        echo "livesrv: npm ci failed in $dir: the web pages will play HLS natively only" >&2
        [ "${1:-}" != required ]
    }
}
