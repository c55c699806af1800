#!/usr/bin/env bash
# Installs what executing the notebooks headlessly needs into $STUDY_TOOLS (default: tools/ in the
# repo, git-ignored; a relative STUDY_TOOLS is taken relative to the repo root):
#   evcxr/     evcxr_jupyter (pinned, `cargo install`; ≈ 8 min cold on 2 cores, once)
#   venv/      Python venv with nbconvert/nbclient, pinned by scripts/notebook-requirements.txt
#   jupyter/   Jupyter data dir holding the kernel spec `rust` (use it with JUPYTER_PATH=...)
#   evcxr-config/init.evcxr  evcxr startup commands (opt level 0, compilation cache)
# Idempotent: a fast no-op (no network) when everything is in place.
# Reads: STUDY_TOOLS, PYTHON (default python3).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="${STUDY_TOOLS:-tools}"
case "$tools" in /*) ;; *) tools="$root/$tools" ;; esac
mkdir -p "$tools"
tools="$(cd "$tools" && pwd)"
EVCXR_VERSION=0.22.0

# 1. evcxr_jupyter. cargo records what it installed in .crates.toml; check that, not the network.
evcxr="$tools/evcxr/bin/evcxr_jupyter"
if [ ! -x "$evcxr" ] || ! grep -q "^\"evcxr_jupyter $EVCXR_VERSION " "$tools/evcxr/.crates.toml" 2>/dev/null; then
  echo "notebook-tools: installing evcxr_jupyter $EVCXR_VERSION into $tools/evcxr (≈ 8 min, once)" >&2
  start=$SECONDS
  # A CARGO_TARGET_DIR from the caller (CI sets one) would keep ≈ 1 GB of evcxr build artifacts
  # around; let cargo install build in its own temporary folder instead.
  env -u CARGO_TARGET_DIR -u CARGO_BUILD_TARGET_DIR \
    cargo install evcxr_jupyter --version "$EVCXR_VERSION" --locked --root "$tools/evcxr"
  echo "notebook-tools: evcxr_jupyter installed in $((SECONDS - start)) s" >&2
fi

# 2. Python venv, rebuilt from scratch whenever the pinned requirements change.
venv="$tools/venv"
reqs="$root/scripts/notebook-requirements.txt"
if [ ! -x "$venv/bin/jupyter-nbconvert" ] || ! cmp -s "$reqs" "$venv/requirements.txt"; then
  echo "notebook-tools: creating the Python venv $venv" >&2
  start=$SECONDS
  rm -rf "$venv"
  py="${PYTHON:-python3}"
  if "$py" -m venv "$venv"; then
    pip=("$venv/bin/python" -m pip)
  else  # Debian/Ubuntu Python without ensurepip (no python3-venv): drive the system pip instead
    rm -rf "$venv"
    "$py" -m venv --without-pip "$venv"
    pip=("$py" -m pip --python "$venv/bin/python")
  fi
  "${pip[@]}" install --quiet --disable-pip-version-check --no-input -r "$reqs"
  cp "$reqs" "$venv/requirements.txt"   # marker: written last, so a failed install is retried
  echo "notebook-tools: venv ready in $((SECONDS - start)) s" >&2
fi

# 3. Kernel spec `rust`, found through JUPYTER_PATH="$tools/jupyter". evcxr_jupyter re-installs
# itself into $JUPYTER_PATH/kernels/rust at every start unless version.txt there matches its own
# ("1" for 0.22.0), so write that too and keep our spec as written.
spec="$tools/jupyter/kernels/rust"
mkdir -p "$spec"
kernel_json="{
  \"argv\": [\"$evcxr\", \"--control_file\", \"{connection_file}\"],
  \"display_name\": \"Rust\",
  \"language\": \"rust\",
  \"interrupt_mode\": \"message\"
}"
if [ "$(cat "$spec/kernel.json" 2>/dev/null)" != "$kernel_json" ]; then
  printf '%s\n' "$kernel_json" > "$spec/kernel.json"
  printf '1' > "$spec/version.txt"
  JUPYTER_PATH="$tools/jupyter" JUPYTER_PLATFORM_DIRS=1 "$venv/bin/jupyter" kernelspec list --json 2>/dev/null |
    "$venv/bin/python" -c 'import json, sys; d = json.load(sys.stdin)["kernelspecs"]["rust"]["resource_dir"]; assert d == sys.argv[1], d' "$spec" ||
    { echo "notebook-tools: Jupyter does not see the kernel spec $spec" >&2; exit 1; }
  echo "notebook-tools: kernel spec rust -> $spec" >&2
fi

# 4. evcxr startup commands, read from $EVCXR_CONFIG_DIR/init.evcxr when each kernel starts
# (scripts/run-notebooks.sh points EVCXR_CONFIG_DIR here). Notebook code is thin (library calls):
# compile it, and its dependencies, at opt level 0. `:cache` keeps compiled crates.io
# dependencies in $XDG_CACHE_HOME/evcxr (run-notebooks.sh: $tools/cache), size limit in MiB.
mkdir -p "$tools/evcxr-config"
printf ':opt 0\n:cache 8192\n' > "$tools/evcxr-config/init.evcxr"
rm -f "$tools/evcxr-config/evcxr.toml"   # an evcxr.toml with [dependencies] would disable init.evcxr
