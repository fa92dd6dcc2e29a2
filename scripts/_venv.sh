# Sourced by scripts/sealbox, scripts/test and .ci/run: make sure .venv exists and holds this
# checkout's dependencies (with EXTRAS), reinstalling only when pyproject.toml changes.
#
# The first set-up builds fastecdsa from source: py-libp2p 0.8.1 pins fastecdsa==2.3.2, of which PyPI
# has no wheel for any platform (2.3.1 and 3.x have wheels, but the pin admits no other version), and
# it is a C extension on GMP. So before pip runs, missing_build_packages names what the build needs
# and is missing, and the set-up stops with a one-line hint rather than deep in pip's output.
# SEALBOX_SKIP_BUILD_CHECK=1 skips that check (e.g. where pip has a built wheel cached).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SEALBOX_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"

say() { echo "sealbox: $*" >&2; }

# The Debian/Ubuntu packages the first set-up needs and this machine lacks, space-separated (empty
# when nothing is missing): venv support, a C compiler, the GMP headers, Python's own headers.
missing_build_packages() {
    local missing=() cc="${CC:-cc}" include
    "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
    if ! command -v "$cc" >/dev/null && ! command -v gcc >/dev/null; then
        missing+=(build-essential libgmp-dev python3-dev)
    else
        command -v "$cc" >/dev/null || cc=gcc
        echo '#include <gmp.h>' | "$cc" -E -x c - >/dev/null 2>&1 || missing+=(libgmp-dev)
        include="$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["include"])' 2>/dev/null)"
        echo '#include <Python.h>' | "$cc" -E -x c -I"$include" - >/dev/null 2>&1 || missing+=(python3-dev)
    fi
    echo "${missing[*]}"
}

# pip's step lines only (what it collects, builds and installs), indented and cut at 100 columns, as
# they come; pip's errors go to stderr untouched.
pip_steps() {
    awk '/^(Collecting|Building wheel|Successfully|Installing collected)/ {
        line = "  " $0; if (length(line) > 100) line = substr(line, 1, 97) "..."; print line; fflush() }'
}

ensure_venv() {
    local extras="$1"
    local stamp="$VENV/.sealbox-installed"
    local hash want missing started
    hash="$(sha256sum < "$ROOT/pyproject.toml" | cut -c1-16)"
    want="$hash $extras"
    # a set-up with any extras also serves a plain run
    if [ -x "$VENV/bin/python" ] && [ -f "$stamp" ]; then
        if [ -z "$extras" ] && grep -q "^$hash " "$stamp"; then return 0; fi
        if grep -qxF -- "$want" "$stamp"; then return 0; fi
    fi
    if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        say "needs Python 3.11 or newer (set PYTHON=/path/to/python3.11)"
        exit 1
    fi
    if [ "${SEALBOX_SKIP_BUILD_CHECK:-}" != 1 ] && ! "$VENV/bin/python" -c 'import fastecdsa' 2>/dev/null; then
        missing="$(missing_build_packages)"
        if [ -n "$missing" ]; then
            say "setup needs a C compiler, the GMP and Python headers and venv to build fastecdsa (a py-libp2p dependency): sudo apt-get install $missing"
            exit 1
        fi
    fi
    started=$SECONDS
    say "setting up $VENV (first run, or pyproject.toml changed; about 1 min: fastecdsa is compiled)..."
    if [ ! -x "$VENV/bin/python" ]; then
        say "creating the virtualenv"
        "$PYTHON" -m venv "$VENV"
    fi
    local spec="$ROOT"
    [ -z "$extras" ] || spec="$ROOT[$extras]"
    say "installing the dependencies with pip"
    "$VENV/bin/python" -m pip install --disable-pip-version-check --progress-bar off -e "$spec" | pip_steps >&2
    grep -vxF -- "$want" "$stamp" 2>/dev/null > "$stamp.new" || true
    echo "$want" >> "$stamp.new"
    mv "$stamp.new" "$stamp"
    say "done: $VENV is ready ($((SECONDS - started)) s)"
}
