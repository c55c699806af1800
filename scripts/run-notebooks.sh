#!/usr/bin/env bash
# Executes notebooks headlessly (nbclient + the evcxr Rust kernel `rust`), one after the other.
#   scripts/run-notebooks.sh <data_dir> <reports_dir> <notebook.ipynb>...
# The kernel, hence `std::env::var` in cells, sees STUDY_DATA=<data_dir> and
# STUDY_REPORTS=<reports_dir>, both absolute; cells run in the notebook's folder. Executed copies
# (partial ones too, up to the failing cell) go to <reports_dir>/executed/<name>.ipynb, never next
# to the notebooks. A notebook stops at its first failing cell (compile error, `?` on an Err,
# panic); the script then names the notebook, the cell and its error, runs the remaining
# notebooks and exits 1.
# Reads: STUDY_TOOLS (see notebook-tools.sh), STUDY_NB_TIMEOUT (seconds per cell, default 3600).
# Speed: evcxr compiles at opt level 0 (init.evcxr) in one persistent crate folder
# ($STUDY_TOOLS/evcxr-build) with a compilation cache ($STUDY_TOOLS/cache/evcxr), so compiled
# dependencies are shared by all notebooks and runs; a lock serialises runs sharing them.
set -euo pipefail
[ $# -ge 3 ] || { echo "usage: $0 <data_dir> <reports_dir> <notebook.ipynb>..." >&2; exit 2; }
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/notebook-tools.sh"
tools="${STUDY_TOOLS:-tools}"
case "$tools" in /*) ;; *) tools="$root/$tools" ;; esac
tools="$(cd "$tools" && pwd)"
data="$(realpath -m -- "$1")"
reports="$(realpath -m -- "$2")"
shift 2
[ -f "$data/01_corpus/manifest.yaml" ] ||
  { echo "run-notebooks: no corpus at $data; run \`make corpus\` for that preset first" >&2; exit 1; }
for nb in "$@"; do [ -f "$nb" ] || { echo "run-notebooks: no notebook $nb" >&2; exit 2; }; done

export STUDY_DATA="$data" STUDY_REPORTS="$reports"
# evcxr runs cargo in its own build crate and dlopen()s the library it expects under
# $EVCXR_TMPDIR/target; a caller's CARGO_TARGET_DIR (CI sets one) would send the build elsewhere
# and the kernel dies with "dlopen failed".
unset CARGO_TARGET_DIR CARGO_BUILD_TARGET_DIR
# evcxr links each cell's library against the toolchain's shared libstd (prefer-dynamic) and
# dlopen()s it; outside a cargo-launched environment the loader does not know where that libstd
# lives, and the kernel dies at startup with "dlopen failed". Point it at the toolchain.
sysroot="$(rustc --print sysroot)"
host="$(rustc -vV | sed -n 's/^host: //p')"
export LD_LIBRARY_PATH="$sysroot/lib/rustlib/$host/lib:$sysroot/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# Jupyter: our kernel spec, no user/system config, runtime files inside the tools folder.
export JUPYTER_PATH="$tools/jupyter" JUPYTER_CONFIG_DIR="$tools/jupyter-config" \
  JUPYTER_RUNTIME_DIR="$tools/jupyter-runtime" JUPYTER_PLATFORM_DIRS=1
# evcxr: init.evcxr from the config dir, a persistent build crate, `:cache` under XDG_CACHE_HOME.
export EVCXR_CONFIG_DIR="$tools/evcxr-config" EVCXR_TMPDIR="$tools/evcxr-build" XDG_CACHE_HOME="$tools/cache"
mkdir -p "$JUPYTER_CONFIG_DIR" "$JUPYTER_RUNTIME_DIR" "$EVCXR_TMPDIR" "$XDG_CACHE_HOME" "$reports/executed"

# One run at a time per tools folder: concurrent kernels would share (and clobber) EVCXR_TMPDIR.
if command -v flock > /dev/null; then
  exec 9> "$tools/.run-notebooks.lock"
  flock -n 9 || { echo "run-notebooks: waiting for another run using $tools" >&2; flock 9; }
fi

# nbclient directly rather than `jupyter nbconvert --execute`: evcxr's execute_reply carries no
# ename/evalue/traceback (only its iopub error output does), so nbconvert's CellExecutionError
# message is empty, and nbconvert writes nothing when a cell fails.
run_one() {
  "$tools/venv/bin/python" - "$@" <<'PY'
import os, re, sys, time, nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
src, out, log, timeout = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
name = os.path.basename(src)
nb = nbformat.read(src, as_version=4)
current = []  # index of the code cell being executed

def on_executed(cell, cell_index, execute_reply):
    # evcxr reports runtime failures (`?` on an Err, panics) only as stderr text, with an "ok"
    # reply: treat any stderr output as a failure (cells tagged raises-exception may fail).
    stderr = "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("name") == "stderr")
    if stderr.strip() and "raises-exception" not in cell.get("metadata", {}).get("tags", []):
        raise RuntimeError("the cell wrote to stderr (how evcxr reports `?` errors and panics)")

client = NotebookClient(nb, kernel_name="rust", timeout=timeout, startup_timeout=300,
                        resources={"metadata": {"path": os.path.dirname(os.path.abspath(src))}},
                        on_cell_execute=lambda cell, cell_index: current.append(cell_index),
                        on_cell_executed=on_executed)
start = time.monotonic()
start_wall = time.time() - 1  # file mtimes have coarse resolution on some filesystems
try:
    with open(log, "w") as kernel_output:  # the kernel's stdout/stderr: cargo's progress, evcxr notices
        client.execute(stdout=kernel_output, stderr=kernel_output)
except Exception as error:  # cell error, stderr, timeout, dead kernel, kernel that would not start
    print(f"run-notebooks: {name} FAILED after {time.monotonic() - start:.0f} s (kernel log: {log})", file=sys.stderr)
    if current:
        cell = nb.cells[current[-1]]
        print(f"--- cell {current[-1] + 1} of {len(nb.cells)}:\n{cell.source}\n--- its output:", file=sys.stderr)
        for o in cell.get("outputs", []):
            text = "\n".join(o.get("traceback") or []) or o.get("text") or o.get("data", {}).get("text/plain", "")
            print(re.sub(r"\x1b\[[0-9;]*m", "", "".join(text)).rstrip()[:4000], file=sys.stderr)
    if not isinstance(error, CellExecutionError):  # its message is empty with evcxr
        print(f"--- {type(error).__name__}: {error}", file=sys.stderr)
    try:  # a kernel that died or would not start says why only in its own output
        with open(log) as kernel_output:
            tail = kernel_output.read().splitlines()[-40:]
        if tail:
            print(f"--- the kernel's last output ({log}):\n" + "\n".join(tail), file=sys.stderr)
    except OSError:
        pass
    sys.exit(1)
finally:
    nbformat.write(nb, out)
# Each notebook declares the figures it writes (metadata "study": {"figures": [...]}); a cell can
# fail without a word from evcxr, so check that every declared figure was written by this run.
reports = os.environ["STUDY_REPORTS"]
missing = [f for f in nb.metadata.get("study", {}).get("figures", [])
           if not os.path.exists(p := os.path.join(reports, "figures", f + ".svg"))
           or os.path.getmtime(p) < start_wall]
if missing:
    print(f"run-notebooks: {name} FAILED: it did not write {', '.join(m + '.svg' for m in missing)} "
          f"under {reports}/figures (a cell failed silently; see {out})", file=sys.stderr)
    sys.exit(1)
print(f"run-notebooks: {name} ok in {time.monotonic() - start:.0f} s -> {out}", file=sys.stderr)
PY
}

failed=()
for nb in "$@"; do
  name="$(basename "$nb")"
  out="$reports/executed/$name"
  run_one "$nb" "$out" "${out%.ipynb}.log" "${STUDY_NB_TIMEOUT:-3600}" || failed+=("$name")
done
[ ${#failed[@]} -eq 0 ] || { echo "run-notebooks: failed: ${failed[*]} (logs in $reports/executed)" >&2; exit 1; }
