#!/usr/bin/env bash
# Install what executing the notebooks needs into $STUDY_TOOLS (default: tools/, git-ignored):
# evcxr_jupyter (pinned, cargo install), a Python venv with nbconvert/nbclient, and a Jupyter
# kernel spec named `rust` pointing at the installed evcxr. Idempotent: a fast no-op when done.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
tools="${STUDY_TOOLS:-$root/tools}"
mkdir -p "$tools"
tools="$(cd "$tools" && pwd)"
EVCXR_VERSION=0.22.0

evcxr="$tools/evcxr/bin/evcxr_jupyter"
if [ ! -x "$evcxr" ] || [ "$(cat "$tools/evcxr/.version" 2>/dev/null)" != "$EVCXR_VERSION" ]; then
  echo "installing evcxr_jupyter $EVCXR_VERSION into $tools/evcxr (first time only, ~8 min)" >&2
  cargo install evcxr_jupyter --version "$EVCXR_VERSION" --locked --root "$tools/evcxr"
  echo "$EVCXR_VERSION" > "$tools/evcxr/.version"
fi

venv="$tools/venv"
if [ ! -x "$venv/bin/jupyter-nbconvert" ]; then
  echo "creating the notebook venv in $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet -r "$root/scripts/notebook-requirements.txt"
fi

spec="$tools/jupyter/kernels/rust"
mkdir -p "$spec"
cat > "$spec/kernel.json" <<JSON
{
  "argv": ["$evcxr", "--control_file", "{connection_file}"],
  "display_name": "Rust",
  "language": "rust",
  "interrupt_mode": "message"
}
JSON
