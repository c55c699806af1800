# The safety fine-tuning study as a staged pipeline. `make help` lists the targets.
#
# Every stage target is a file: the stage's manifest, after the upstream manifests. make always
# asks the `study` binary, and the binary alone decides whether a stage runs: it compares the
# resolved config (overrides included), its code fingerprint and the input hashes with the
# manifest (~0.1 s when nothing changed) and leaves an up-to-date manifest untouched, so nothing
# downstream is asked to redo work. The binary is an order-only prerequisite.

.DEFAULT_GOAL := help
.DELETE_ON_ERROR:
SHELL := bash
.SHELLFLAGS := -euo pipefail -c

PRESET ?= cpu
SEED ?= 0
# `make all SEEDS="0 1 2"` runs every stage per seed, then combines the seeds (mean, 95 % CI).
SEEDS ?= $(SEED)
DEVICE ?= cpu
THREADS ?=
# Fine-tuned variants trained at once by `make all` (each on THREADS, default 1 thread when JOBS > 1:
# independent one-thread runs beat one two-thread run on 2 cores).
JOBS ?= 2
FT_THREADS := $(or $(THREADS),$(if $(filter 1,$(JOBS)),,1))
PROFILE ?= release
CARGO ?= cargo
STUDY_TOOLS ?= $(CURDIR)/tools
export STUDY_TOOLS

TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
PROFILE_DIR := $(if $(filter release,$(PROFILE)),release,debug)
CARGO_FEATURES := $(if $(filter cuda,$(DEVICE)),--features cuda,)
STUDY := $(TARGET_DIR)/$(PROFILE_DIR)/study
STUDY_FLAGS := --device $(DEVICE) $(if $(THREADS),--threads $(THREADS),)

# Where runs live: STUDY_DATA_ROOT if set (the binary reads the same variable), else data/.
DATA_ROOT := $(or $(STUDY_DATA_ROOT),data)
export STUDY_DATA_ROOT := $(DATA_ROOT)
# Seeds are plain decimals: the binary names the run folder seed-<value>, so SEED=01 would look for
# a folder that is never written and re-run forever.
BAD_SEEDS := $(shell for s in $(SEED) $(SEEDS); do [[ "$$s" =~ ^(0|[1-9][0-9]*)$$ ]] || echo "$$s"; done)
ifneq ($(BAD_SEEDS),)
$(error SEED/SEEDS: `$(BAD_SEEDS)` is not a plain decimal seed (write 1, not 01 or +1))
endif
RUN := $(DATA_ROOT)/$(PRESET)/seed-$(SEED)
CONFIGS := pipeline/configs/$(PRESET)
REPORTS := reports
NOTEBOOKS := $(sort $(wildcard notebooks/*.ipynb))

# What each stage's outputs depend on is decided by the stage itself (its code fingerprint, config
# hash and input hashes, recorded in its manifest), so make keeps no list of a stage's files: every
# stage target depends on FORCE. A run made with `--set` overrides into the preset's folder is
# therefore replaced by the next plain `make` (give such runs their own root: STUDY_DATA_ROOT).
# The notebooks read the `study` library: the figures depend on every source file.
CODE := $(shell find pipeline -name '*.rs' -not -path '*/target/*') Cargo.lock
CORPUS := $(RUN)/01_corpus/manifest.yaml
PRETRAIN := $(RUN)/02_pretrain/manifest.yaml
# The safety fine-tuned models: <method>-<lr label> (labels from finetune.yaml `lrs`).
VARIANTS ?= ssft-medium ssft-small dpo-medium dpo-small unlearn-medium unlearn-small
FINETUNE := $(foreach v,$(VARIANTS),$(RUN)/03_finetune/$(v)/manifest.yaml)
EVALUATE := $(RUN)/04_evaluate/manifest.yaml
PROBE := $(RUN)/05_probe/manifest.yaml
SPECTRA := $(RUN)/06_spectra/manifest.yaml
comma := ,
empty :=
space := $(empty) $(empty)

.PHONY: FORCE help all tiny build corpus pretrain finetune evaluate probe spectra seeds figures notebooks-test test bench bench-pytorch timings clean

## help: list the targets (PRESET=tiny|cpu|paper, SEED=k, DEVICE=cpu|cuda, THREADS=n, JOBS=n)
help:
	@awk '/^## /{l=substr($$0,4); i=index(l,": "); printf "  %-16s %s\n", substr(l,1,i-1), substr(l,i+2)}' $(MAKEFILE_LIST)

## all: every stage on PRESET for each of SEEDS (default: SEED; JOBS=2 fine-tunes two variants at once), the seeds table, then the notebooks and their figures (of SEED)
all:
	for s in $(SEEDS); do \
	  $(MAKE) pretrain SEED=$$s && \
	  $(MAKE) -j$(JOBS) finetune SEED=$$s $(if $(FT_THREADS),THREADS=$(FT_THREADS),) && \
	  $(MAKE) spectra SEED=$$s || exit 1; \
	done
	$(if $(word 2,$(SEEDS)),$(MAKE) seeds,)
	$(MAKE) figures

## tiny: the whole DAG on the tiny preset, in seconds (what the tests use)
tiny:
	$(MAKE) spectra PRESET=tiny PROFILE=dev

## build: compile the `study` binary (release unless PROFILE=dev; DEVICE=cuda adds CUDA)
# PROFILE=dev builds through `cargo test --no-run`: the binary then has the same dependency
# features as the test build, so `make test` compiles the dependency graph once, not twice.
build:
ifeq ($(PROFILE),release)
	$(CARGO) build --release $(CARGO_FEATURES) -p study-cli --bin study
else
	$(CARGO) test --workspace --no-run $(CARGO_FEATURES)
endif

## corpus: synthetic data (pre-training, fine-tuning and evaluation sets) → data/<preset>/seed-<k>/01_corpus
corpus: $(CORPUS)

$(CORPUS): FORCE | build
	$(STUDY) $(STUDY_FLAGS) corpus --preset $(PRESET) --seed $(SEED)

## pretrain: the instruction-tuned model (add RESUME=1 to continue a killed run) → 02_pretrain
pretrain: $(PRETRAIN)

$(PRETRAIN): $(CORPUS) FORCE | build
	$(STUDY) $(STUDY_FLAGS) pretrain --preset $(PRESET) --seed $(SEED) $(if $(RESUME),--resume,)

## finetune: the safety fine-tuned models, one per VARIANTS entry (SSFT, DPO, unlearning × lr) → 03_finetune/<variant>
finetune: $(FINETUNE)

$(RUN)/03_finetune/%/manifest.yaml: $(PRETRAIN) FORCE | build
	$(STUDY) $(STUDY_FLAGS) finetune --preset $(PRESET) --seed $(SEED) --variant $*

## evaluate: behaviour of IT + fine-tuned models on every evaluation set, soft-token attack → 04_evaluate
evaluate: $(EVALUATE)

$(EVALUATE): $(FINETUNE) FORCE | build
	$(STUDY) $(STUDY_FLAGS) evaluate --preset $(PRESET) --seed $(SEED) --variants $(subst $(space),$(comma),$(strip $(VARIANTS)))

## probe: activations at the MLP hooks, Lipschitz proxies, attacked inputs' activations → 05_probe
probe: $(PROBE)

$(PROBE): $(EVALUATE) FORCE | build
	$(STUDY) $(STUDY_FLAGS) probe --preset $(PRESET) --seed $(SEED) --variants $(subst $(space),$(comma),$(strip $(VARIANTS)))

## spectra: τ, ΔW spectra, null/row space, refusal direction, Lipschitz histograms, with controls → 06_spectra
spectra: $(SPECTRA)

$(SPECTRA): $(PROBE) FORCE | build
	$(STUDY) $(STUDY_FLAGS) spectra --preset $(PRESET) --seed $(SEED) --variants $(subst $(space),$(comma),$(strip $(VARIANTS)))

## seeds: every figure quantity over SEEDS as mean and 95 % CI → data/<preset>/seeds/seeds.parquet
seeds: $(foreach s,$(SEEDS),$(DATA_ROOT)/$(PRESET)/seed-$(s)/06_spectra/manifest.yaml) | build
	$(STUDY) $(STUDY_FLAGS) seeds --preset $(PRESET) --seeds $(subst $(space),$(comma),$(strip $(SEEDS)))

## figures: execute every notebook headlessly (Jupyter + evcxr) on PRESET; figures → reports/figures
# A stamp per run: the notebooks re-execute only when a notebook, the run's data (the spectra
# manifest is rewritten whenever anything upstream ran again), the code or the runner changed,
# or when the figures were last drawn from another preset or seed.
FIGURES_STAMP := $(REPORTS)/executed/.figures-$(PRESET)-seed-$(SEED)
figures: $(FIGURES_STAMP)

$(FIGURES_STAMP): $(NOTEBOOKS) $(SPECTRA) $(CODE) scripts/run-notebooks.sh
	rm -f $(REPORTS)/executed/.figures-*
	scripts/run-notebooks.sh $(RUN) $(REPORTS) $(NOTEBOOKS)
	touch $@

## notebooks-test: execute every notebook on the tiny preset through the real Jupyter + evcxr path
notebooks-test:
	$(MAKE) tiny
	scripts/run-notebooks.sh $(DATA_ROOT)/tiny/seed-0 $(DATA_ROOT)/tiny/seed-0/reports $(NOTEBOOKS)

## test: the whole test suite: unit, reference, snapshot and end-to-end tests, then the notebooks
test:
	$(CARGO) test --workspace
	$(MAKE) notebooks-test

## bench: throughput benchmarks (corpus samples/s per set; training steps/s, GFLOP/s; peak memory)
# `-p study-model` beside `-p study`: resolved alone, the `study` crate's graph turns on fewer
# features of gemm, half, … than the `study` binary's (no candle in it), so the corpus bench would
# compile faer, polars and 80 crates again instead of reusing the release build.
bench:
	$(CARGO) bench -p study -p study-model --bench corpus
	$(CARGO) bench -p study-model --bench train

## bench-pytorch: our training step beside a PyTorch mirror that must first reproduce our logits and gradients (1 and 2 threads, BENCH_ROUNDS interleaved rounds, medians; installs torch into STUDY_TOOLS, ~5 GB, once)
# Absolute: `cargo bench` runs the bench in its package folder, where a relative path would land.
BENCH_OUT := $(abspath $(TARGET_DIR))/bench-pytorch
TORCH_PY := $(STUDY_TOOLS)/bench-pytorch/bin/python
MIRROR := pipeline/study-model/benches/pytorch_mirror.py
# Rounds of ours-then-PyTorch; the table reports medians (a shared machine drifts within minutes).
BENCH_ROUNDS ?= 3
bench-pytorch:
	test -x $(TORCH_PY) || { python3 -m venv $(STUDY_TOOLS)/bench-pytorch && $(STUDY_TOOLS)/bench-pytorch/bin/pip install -q torch safetensors numpy; }
	rm -rf $(BENCH_OUT) && mkdir -p $(BENCH_OUT)
	for r in $$(seq $(BENCH_ROUNDS)); do \
	  for n in 1 2; do \
	    BENCH_FIXTURE=$(BENCH_OUT)/fixture BENCH_JSON=$(BENCH_OUT)/run.jsonl BENCH_SHAPES=cpu,cpu-l18 BENCH_STEPS=50 \
	    RAYON_NUM_THREADS=$$n $(CARGO) bench -p study-model --bench train || exit 1; \
	    cat $(BENCH_OUT)/run.jsonl >> $(BENCH_OUT)/ours.jsonl; \
	    BENCH_JSON=$(BENCH_OUT)/run.jsonl BENCH_SHAPES=paper BENCH_STEPS=10 \
	    RAYON_NUM_THREADS=$$n $(CARGO) bench -p study-model --bench train || exit 1; \
	    cat $(BENCH_OUT)/run.jsonl >> $(BENCH_OUT)/ours.jsonl; \
	  done; \
	  $(TORCH_PY) $(MIRROR) measure --fixture $(BENCH_OUT)/fixture --out $(BENCH_OUT)/theirs.jsonl --shapes cpu,cpu-l18 --steps 50 || exit 1; \
	  $(TORCH_PY) $(MIRROR) measure --fixture $(BENCH_OUT)/fixture --out $(BENCH_OUT)/theirs.jsonl --shapes paper --steps 10 || exit 1; \
	done
	$(TORCH_PY) $(MIRROR) table --fixture $(BENCH_OUT)/fixture --ours $(BENCH_OUT)/ours.jsonl --theirs $(BENCH_OUT)/theirs.jsonl

## timings: wall seconds and peak memory of every stage of the last run of PRESET/SEED, from its manifests (the stages' bench table)
timings:
	@ls $(RUN)/0*/manifest.yaml >/dev/null 2>&1 || { echo "no stage manifests under $(RUN); run \`make all PRESET=$(PRESET)\` first" >&2; exit 1; }
	@printf '| stage | wall s | peak RSS MiB | of which |\n|---|---:|---:|---|\n'
	@for m in $(RUN)/0[12]_*/manifest.yaml $(RUN)/03_finetune/*/manifest.yaml $(RUN)/0[4-9]_*/manifest.yaml; do \
	  [ -f "$$m" ] || continue; \
	  awk -v s="$${m#$(RUN)/}" '/^wall_seconds:/ {w=$$2} /^peak_rss_mib:/ {r=sprintf("%.0f", $$2)} /^  [a-z_]*seconds:/ {o=o sprintf("%s %.1f ", $$1, $$2)} \
	    END {sub("/manifest.yaml", "", s); printf "| %s | %.1f | %s | %s|\n", s, w, (r == "" ? "—" : r), o}' "$$m"; \
	done

FORCE:

## clean: remove PRESET's generated data (every seed) and the executed notebooks (keeps other presets, reports/ and the tools folder)
clean:
	rm -rf $(DATA_ROOT)/$(PRESET) reports/executed
