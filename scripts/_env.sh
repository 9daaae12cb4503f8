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
