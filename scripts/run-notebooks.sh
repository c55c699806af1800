#!/usr/bin/env bash
# Execute notebooks headlessly with the evcxr (Rust) kernel.
#   scripts/run-notebooks.sh <data_dir> <reports_dir> <notebook.ipynb>...
# The kernel sees STUDY_DATA=<data_dir> (a data/<preset>/seed-<k> folder) and
# STUDY_REPORTS=<reports_dir>; executed copies go to <reports_dir>/executed/, never into notebooks/.
# evcxr compiles notebook code at opt-level 0 and keeps its build folder under $STUDY_TOOLS, so
# compiled dependencies (polars, plotters, study) are reused across notebooks and runs.
set -euo pipefail
[ $# -ge 3 ] || { echo "usage: $0 <data_dir> <reports_dir> <notebook.ipynb>..." >&2; exit 2; }
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/scripts/notebook-tools.sh"
tools="$(cd "${STUDY_TOOLS:-$root/tools}" && pwd)"
data="$(realpath -m "$1")"
reports="$(realpath -m "$2")"
shift 2
[ -f "$data/01_corpus/manifest.yaml" ] || { echo "no corpus at $data; run \`make corpus\` for that preset first" >&2; exit 1; }

export STUDY_DATA="$data" STUDY_REPORTS="$reports"
export JUPYTER_PATH="$tools/jupyter" JUPYTER_DATA_DIR="$tools/jupyter" JUPYTER_CONFIG_DIR="$tools/jupyter-config"
export JUPYTER_RUNTIME_DIR="$tools/jupyter-runtime" JUPYTER_PLATFORM_DIRS=1
export EVCXR_CONFIG_DIR="$tools/evcxr-config" EVCXR_TMPDIR="$tools/evcxr-build" XDG_CACHE_HOME="$tools/cache"
mkdir -p "$EVCXR_CONFIG_DIR" "$EVCXR_TMPDIR" "$XDG_CACHE_HOME" "$JUPYTER_RUNTIME_DIR" "$reports/executed"
# Notebook code is thin (library calls): compile it fast, not well. Dependencies keep their
# own cargo profile.
printf '[evcxr]\nopt_level = "0"\n' > "$EVCXR_CONFIG_DIR/evcxr.toml"

status=0
for nb in "$@"; do
  name="$(basename "$nb")"
  start=$(date +%s)
  if "$tools/venv/bin/jupyter-nbconvert" --to notebook --execute \
      --ExecutePreprocessor.kernel_name=rust --ExecutePreprocessor.timeout=3600 \
      --output-dir "$reports/executed" --output "$name" "$nb" > "$reports/executed/${name%.ipynb}.log" 2>&1; then
    echo "notebook $name: ok in $(( $(date +%s) - start )) s" >&2
  else
    echo "notebook $name: FAILED after $(( $(date +%s) - start )) s; the failing cell and its error:" >&2
    tail -40 "$reports/executed/${name%.ipynb}.log" >&2
    status=1
  fi
done
exit $status
