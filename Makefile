# medsr-caffe: one target per verb. `make setup` once, then `make test`.
SHELL := /bin/bash
ROOT := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
PY := $(ROOT)/.venv/bin/python

# Training: `make train DATASET=prostate ACT=rrelu SOLVER=nesterov [ITERS=N] [SEED=K] [SET="key=value ..."]`
# The lists come from Python (core/names.py), never repeated here.
NAMES = $(shell $(PY) -m core.names $(1) 2>/dev/null)
DATASETS ?= $(call NAMES,datasets)
GRID ?= paper
SEEDS ?= 1
# make reproduce trains JOBS runs side by side with RUN_THREADS threads each: on 2 cores two
# one-thread runs do more iterations per second than one two-thread run (timings: docs/notebook/), with the same bits
# (training does not depend on the thread count: tests/test_caffe_patches.py).
JOBS ?= $(shell nproc)
RUN_THREADS ?= 1
PROFILE ?= short
# PROFILE=paper: the paper's 4e6 iterations and Fig. 3's test points (core/paper_fig5.json)
PROFILE_paper = $(shell $(PY) -m core.paper profile 2>/dev/null)
PROFILE_paper-dense = $(shell $(PY) -m core.paper profile dense 2>/dev/null)
PROFILE_short :=
# LAYERS: how Caffe builds the activations, never what they compute. act_layer=auto puts them inside
# the convolutions where this Caffe (patch 0011), the CPU and the activation allow it (the same
# numbers, faster per step: docs/performance.md); LAYERS= keeps the stock layers. SET= can override it too.
LAYERS ?= act_layer=auto
TRAIN_ARGS = $(LAYERS) $(PROFILE_$(PROFILE)) $(if $(ITERS),max_iter=$(ITERS)) $(if $(GPU_ID),solver_mode=GPU) $(SET)
# make grid SCHEDULER=slurm: one Slurm job array (tools/slurm/grid.sbatch) and an evaluation job;
# SBATCH_ARGS: site options for both (partition, account, time limit); DRY_RUN=1 prints the sbatch
# commands. The local one-node cluster (make slurm-up) lives in SLURM_DIR on ports SLURM_PORT, +1.
SCHEDULER ?= local
SBATCH_ARGS ?=
export SBATCH_ARGS
SLURM_LOGS ?= $(ROOT)/logs/slurm
SLURM_DIR ?= $(ROOT)/.slurm
SLURM_PORT ?= 16817
# Without SLURM_CONF, a running local cluster (make slurm-up) is the one used; else the system's.
SLURM_ENV = $(if $(SLURM_CONF),,$(if $(wildcard $(SLURM_DIR)/run/slurmctld.pid),SLURM_CONF=$(SLURM_DIR)/etc/slurm.conf))
# $(call quote,TEXT): TEXT as one single-quoted shell word, so that a path a user gives reaches the
# program as it is and is never run by the shell; $(value VAR) keeps make from expanding a '$' in it.
quote = '$(subst ','\'',$(1))'
# The directory make was called from (make -C changes it; the caller's shell exported PWD): a
# relative IN or OUT is relative to it.
CALLER_DIR := $(or $(PWD),$(CURDIR))
# make grid holds runs/ (core/locks.py): a second grid or reproduce on this checkout is refused
# with the first one's pid instead of training the same runs twice; each trainer locks its run too.
HOLD_RUNS = $(PY) -m core.locks $(ROOT)/.runs.lock "make grid" $(ROOT)/runs --
# make grid SOLVER_FILES="a.prototxt b.prototxt": the files (a relative one is the caller's) are
# read before any run starts, and each grid run names its file by the stem (core.names).
SOLVER_FILES_ABS = $(foreach f,$(SOLVER_FILES),$(if $(filter /%,$(f)),$(f),$(CALLER_DIR)/$(f)))
GRID_SOLVER_ARGS = $(foreach f,$(SOLVER_FILES_ABS),--grid-solver-file $(call quote,$(f)))
CHECK_SOLVER_FILES = $(if $(SOLVER_FILES),(cd $(ROOT) && $(PY) -m core.user_solver $(foreach f,$(SOLVER_FILES_ABS),$(call quote,$(f)))),true)
# $(call require,VARS): stop with one line naming the first unset variable (recipes only).
require = $(foreach v,$(1),$(if $($(v)),,$(error make $@: set $(v)=... ($(v) is empty; see make help))))

.PHONY: help setup test test-kernels test-fast check-venv nets data train grid curves eval figures reproduce bench upscale
.PHONY: grid-status slurm-up slurm-down gpu-check regions export reference thickslice thickslice-validate
# make setup GPU=1: Caffe with CUDA (tools/setup/setup_gpu.sh); GPU=0: CPU-only; auto: 1 when
# nvidia-smi lists a GPU.
GPU ?= auto
# GPU_ID=N: train, grid, eval and upscale compute on GPU N (a CUDA build: make setup GPU=1)
GPU_ARG = $(if $(GPU_ID),--gpu $(GPU_ID))

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 16

setup:  ## Debian packages, Caffe (built once into ~/.cache/medsr-caffe), .venv [GPU=1|0|auto]
	@GPU=$(GPU) bash $(ROOT)/tools/setup/setup.sh

gpu-check: check-venv  ## on a machine with a GPU: device query, GPU vs CPU loss curve, step times [GPU_ID=0]; without one, says so
	@cd $(ROOT) && $(PY) -m tools.gpu_check --gpu $(or $(GPU_ID),0)

check-venv:
	@test -x $(PY) || { echo "make: .venv is missing: run 'make setup' first" >&2; exit 1; }

test: check-venv  ## the pytest suite (CPU, minutes)
	@cd $(ROOT) && $(PY) -m pytest

test-kernels: check-venv  ## the tests marked blas again under an older OpenBLAS core type (a child process's OPENBLAS_CORETYPE) [CORES="Haswell Zen SkylakeX Sandybridge"] [ALL=1: every test]
	@cd $(ROOT) && $(PY) -m tools.blas_kernels $(if $(CORES),--cores $(CORES)) $(if $(ALL),--all-tests)

test-fast: check-venv  ## the pytest suite without the tests marked slow or slurm
	@cd $(ROOT) && $(PY) -m pytest -m "not slow and not slurm"

nets: check-venv  ## regenerate models/ and solvers/ from core/config.py
	@cd $(ROOT) && GLOG_minloglevel=2 $(PY) -m tools.generate

data: check-venv  ## build the default data sets (core/datasets.py) into data/
	@cd $(ROOT) && $(PY) -m data_prep $(foreach d,$(or $(DATASET),$(DATASETS)),--dataset $(d))

train: check-venv  ## one run: DATASET= ACT= SOLVER= (or SOLVER_FILE=your_solver.prototxt) [ITERS=] [PROFILE=paper] [SET="k=v ..."]
	$(call require,DATASET ACT)$(if $(or $(SOLVER),$(SOLVER_FILE)),,$(error make train: set SOLVER=... or SOLVER_FILE=...; see make help))@cd $(ROOT) && $(PY) -m tools.train --dataset $(DATASET) --act $(ACT) $(if $(SOLVER_FILE),--solver-file $(call quote,$(if $(filter /%,$(value SOLVER_FILE)),,$(CALLER_DIR)/)$(value SOLVER_FILE)),--solver $(SOLVER)) $(if $(SEED),--seed $(SEED)) $(GPU_ARG) $(TRAIN_ARGS)

grid: check-venv  ## GRID=paper (rrelu_nesterov, relu_sgd) or full (2x2) x DATASETS x SEEDS [SOLVERS="TYPE ...": Caffe solver types instead; SOLVER_FILES="a.prototxt ...": your solver files too; each with the paper's two activations]; -j safe; resumes; SCHEDULER=slurm
ifeq ($(SCHEDULER),slurm)
	@$(PY) -m core.names grid $(GRID) $(SEEDS) "$(DATASETS)" "$(SOLVERS)" "$(SOLVER_FILES_ABS)" >/dev/null
	@$(CHECK_SOLVER_FILES)
	@$(if $(DRY_RUN),,$(MAKE) --no-print-directory data)
	@cd $(ROOT) && $(SLURM_ENV) $(PY) -m tools.slurm.submit --grid $(GRID) --seeds $(SEEDS) \
	  --datasets "$(DATASETS)" --solvers "$(SOLVERS)" --solver-files "$(SOLVER_FILES_ABS)" --profile $(PROFILE) --iters "$(ITERS)" --set "$(SET)" \
	  --logs $(SLURM_LOGS) $(if $(DRY_RUN),--dry-run) -- $(TRAIN_ARGS)
else ifeq ($(SCHEDULER),local)
	@runs=$$($(PY) -m core.names grid $(GRID) $(SEEDS) "$(DATASETS)" "$(SOLVERS)" "$(SOLVER_FILES_ABS)") && \
	  $(CHECK_SOLVER_FILES) && \
	  $(HOLD_RUNS) $(MAKE) --no-print-directory $$(printf 'grid-%s ' $$runs) $(if $(SOLVER_FILES),SOLVER_FILES=$(call quote,$(SOLVER_FILES_ABS)))
else
	$(error make grid: SCHEDULER=$(SCHEDULER): choose local (the default) or slurm)
endif

grid-status: check-venv  ## the last `make grid SCHEDULER=slurm`: each run pending, running, finished or failed [JOB=array id]
	@cd $(ROOT) && $(SLURM_ENV) $(PY) -m tools.slurm.status --logs $(SLURM_LOGS) $(if $(JOB),--job $(JOB))

slurm-up:  ## a one-node Slurm cluster in SLURM_DIR (.slurm/): installs the Debian packages if missing; prints export SLURM_CONF=...
	@bash $(ROOT)/tools/slurm/local_cluster.sh up --dir $(SLURM_DIR) --port $(SLURM_PORT)

slurm-down:  ## stop the daemons slurm-up started (their jobs are cancelled first)
	@bash $(ROOT)/tools/slurm/local_cluster.sh down --dir $(SLURM_DIR)

# One independent run per target (dataset-act-solver-seed): its own run directory; finished runs
# are left alone.
# Under make -j (make reproduce) several runs share the terminal: each prints its progress as
# lines (tools/train.py, progress_style) instead of a bar that redraws over the others'.
grid-%: data
	@cd $(ROOT) && $(if $(filter-out -j1,$(filter -j%,$(MAKEFLAGS))),MEDSR_PROGRESS=lines) $(PY) -m tools.train --resume \
	  --grid-run $* $(GRID_SOLVER_ARGS) $(GPU_ARG) $(TRAIN_ARGS)

reference: check-venv data  ## long-schedule weights: DATASET= [ACT= SOLVER=: another variant] [ITERS=] [SET="k=v ..."] -> models/reference/<dataset>/ (models/long/<dataset>/<act>_<solver>/; resumes)
	$(call require,DATASET)@cd $(ROOT) && $(PY) -m tools.reference --dataset $(DATASET) $(if $(ACT),--act $(ACT)) $(if $(SOLVER),--solver $(SOLVER)) $(if $(ITERS),--iters $(ITERS)) $(LAYERS) $(SET)

curves: check-venv  ## Figs. 3-4 (PSNR vs iterations) per data set into figures/
	@cd $(ROOT) && $(PY) -m tools.curves

eval: check-venv  ## PSNR/SSIM of bicubic and every run, per data set: results/<dataset>.{json,csv,md}
	@cd $(ROOT) && $(PY) -m eval --built $(DATASETS) $(GPU_ARG)

regions: check-venv  ## where a run gains on bicubic: dark region vs the rest: DATASET= RUN= [ITERS="6000 40000"] [DARK=20]
	$(call require,DATASET RUN)@cd $(ROOT) && $(PY) -m eval.regions --dataset $(DATASET) --run "$(RUN)" $(if $(ITERS),--iters $(ITERS)) $(if $(DARK),--dark $(DARK))

figures: check-venv  ## Fig. 6 grids (LR | bicubic | network | original) into figures/
	@cd $(ROOT) && $(PY) -m eval.figures

reproduce: check-venv  ## the main job: data, grid (GRID=paper, SEEDS=1), eval, curves, figures, REPORT.md
	@$(MAKE) --no-print-directory data
	@OMP_NUM_THREADS=$(RUN_THREADS) OPENBLAS_NUM_THREADS=$(RUN_THREADS) \
	  $(MAKE) --no-print-directory -j$(JOBS) grid
	@$(MAKE) --no-print-directory eval curves figures
	@cd $(ROOT) && $(PY) -m eval.report --command "make reproduce GRID=$(GRID) SEEDS=$(SEEDS) PROFILE=$(PROFILE)$(if $(ITERS), ITERS=$(ITERS))"

bench: check-venv  ## Caffe training step of each configuration (tools/bench_train.py, CONFIGS) vs PyTorch, side by side; a GPU column where one is: bench/train_step.json
	@$(PY) -c 'import torch' 2>/dev/null || $(PY) -m pip install --quiet -r tools/setup/requirements-bench.txt
	@cd $(ROOT) && GLOG_minloglevel=2 $(PY) -m tools.bench_train $(BENCH_ARGS)

upscale: check-venv  ## apply a run x3 to your scan: IN=file/folder OUT=path RUN=runs/<dataset>/<act>_<solver>/seed<k> or REFERENCE=<dataset> [MEM=MB]
	$(call require,IN OUT)$(if $(or $(RUN),$(REFERENCE)),,$(error make upscale: set RUN=<run directory> or REFERENCE=<dataset> (models/reference/); see make help))@cd $(call quote,$(CALLER_DIR)) && $(PY) -m eval.upscale --in $(call quote,$(value IN)) --out $(call quote,$(value OUT)) $(if $(REFERENCE),--reference $(call quote,$(value REFERENCE)),--run $(call quote,$(value RUN))) $(if $(FORCE),--force) $(if $(MEM),--memory-budget $(call quote,$(value MEM))) $(GPU_ARG)

export: check-venv  ## a run's net as ONNX, verified against pycaffe in ONNX Runtime and OpenCV: OUT=model.onnx RUN=runs/<dataset>/<act>_<solver>/seed<k> or REFERENCE=<dataset> [FORCE=1]
	$(call require,OUT)$(if $(or $(RUN),$(REFERENCE)),,$(error make export: set RUN=<run directory> or REFERENCE=<dataset> (models/reference/); see make help))@cd $(call quote,$(CALLER_DIR)) && $(PY) -m eval.export --out $(call quote,$(value OUT)) $(if $(REFERENCE),--reference $(call quote,$(value REFERENCE)),--run $(call quote,$(value RUN))) $(if $(FORCE),--force)

# Through-plane super-resolution trained on the scan itself (tools/thickslice.py, docs/thickslice.md).
# SLICE_PROFILE, not PROFILE: PROFILE names the training schedule above.
thickslice: check-venv  ## refine a thick-slice scan's slices, trained on the scan itself (SMORE): IN=scan OUT=path [FACTOR=auto|N] [ITERS=] [ACT= SOLVER=] [SLICE_PROFILE=gaussian|boxcar] [SET="k=v ..."] [FORCE=1]
	$(call require,IN OUT)@cd $(call quote,$(CALLER_DIR)) && $(PY) -m tools.thickslice --in $(call quote,$(value IN)) --out $(call quote,$(value OUT)) $(if $(FACTOR),--factor $(call quote,$(value FACTOR))) $(if $(ITERS),--iters $(call quote,$(value ITERS))) $(if $(ACT),--act $(ACT)) $(if $(SOLVER),--solver $(SOLVER)) $(if $(SLICE_PROFILE),--profile $(SLICE_PROFILE)) $(if $(FORCE),--force) $(LAYERS) $(SET)

thickslice-validate: check-venv  ## make thickslice on Colin27 thickened x3 and x6, scored against its thin slices beside cubic, a cubic spline and the reference net: results/thickslice/ [FACTORS="3 6"] [ITERS=]
	@cd $(ROOT) && $(PY) -m tools.thickslice_validate $(if $(FACTORS),--factors $(FACTORS)) $(if $(ITERS),--iters $(ITERS)) $(LAYERS) $(SET)
