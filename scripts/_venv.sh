# Sourced by scripts/sealbox and scripts/test: make sure .venv exists and holds this checkout's
# dependencies (with EXTRAS), reinstalling only when pyproject.toml changes.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SEALBOX_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"

ensure_venv() {
    local extras="$1"
    local stamp="$VENV/.sealbox-installed"
    local hash want
    hash="$(sha256sum < "$ROOT/pyproject.toml" | cut -c1-16)"
    want="$hash $extras"
    # a set-up with any extras also serves a plain run
    if [ -x "$VENV/bin/python" ] && [ -f "$stamp" ]; then
        if [ -z "$extras" ] && grep -q "^$hash " "$stamp"; then return 0; fi
        if grep -qxF -- "$want" "$stamp"; then return 0; fi
    fi
    if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        echo "sealbox needs Python 3.11 or newer (set PYTHON=/path/to/python3.11)" >&2
        exit 1
    fi
    echo "setting up $VENV (first run, or pyproject.toml changed)..." >&2
    [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
    local spec="$ROOT"
    [ -z "$extras" ] || spec="$ROOT[$extras]"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$spec" >&2
    grep -vxF -- "$want" "$stamp" 2>/dev/null > "$stamp.new" || true
    echo "$want" >> "$stamp.new"
    mv "$stamp.new" "$stamp"
}
