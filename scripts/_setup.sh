# Sourced by scripts/run and scripts/test: make .venv and install the project into it.
# Needs only Python 3.11+ and a C compiler (libp2p builds fastecdsa from source).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"

find_python() {
    for candidate in "${PYTHON:-}" python3.13 python3.12 python3.11 python3; do
        [ -n "$candidate" ] || continue
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    echo "error: vivim-node needs Python 3.11 or newer; install it or set PYTHON=/path/to/python3.11" >&2
    return 1
}

# Reinstall only when what we install from changed: the stamp holds a hash of it.
stamp_of() { cat "$ROOT/pyproject.toml" "$ROOT/constraints.txt" | sha256sum | cut -d' ' -f1; }

if [ ! -x "$VENV/bin/python" ]; then
    PY="$(find_python)"
    echo "setting up .venv with $("$PY" --version)..." >&2
    "$PY" -m venv "$VENV"
fi
if [ "$(cat "$VENV/.installed" 2>/dev/null || true)" != "$(stamp_of)" ]; then
    echo "installing vivim-node and its dependencies into .venv (first time takes ~1 minute)..." >&2
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet -c "$ROOT/constraints.txt" -e "$ROOT[dev]"
    stamp_of >"$VENV/.installed"
fi
