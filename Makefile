# medsr-caffe: one target per verb. `make setup` once, then `make test`.
SHELL := /bin/bash
ROOT := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))

# ---- What a user gives is text: never run by make or by the shell (docs/reliability.md).
# Make would expand a '$(...)' in a variable's value wherever the value is used (and when it exports
# a command-line variable to the recipes), so every command-line variable, and each variable below
# when it comes from the environment, is made literal first: its text as given, exported as before.
USER_VARIABLES := IN OUT RUN REFERENCE FORCE MEM DATASET DATASETS ACT SOLVER SOLVERS SOLVER_FILE \
  SOLVER_FILES SEED SEEDS ITERS SET LAYERS PROFILE GRID JOBS RUN_THREADS GPU GPU_ID FACTOR FACTORS \
  SLICE_PROFILE DARK CORES ALL BENCH_ARGS SCHEDULER SBATCH_ARGS SLURM_LOGS SLURM_DIR SLURM_PORT \
  SLURM_CONF DRY_RUN JOB METRIC NAME SERIES TEST_PATIENTS TEST_SLICES RESUME RESUME_FROM PACS_DIR PACS_PORT SIZES STUDY PACS ECLARE_PATCHES
literal = $(eval override export $(1) := $$(value $(1)))
$(foreach v,$(.VARIABLES),$(if $(filter command line,$(origin $(v))),$(call literal,$(v))))
$(foreach v,$(USER_VARIABLES),$(if $(filter environment%,$(origin $(v))),$(call literal,$(v))))
# Then a recipe gets each value as one shell word. $(call quote,TEXT): TEXT single-quoted.
# $(call arg,TEXT): TEXT as Python's shlex.quote writes it, bare when it holds only letters, digits
# and @%+=:,./-_ (so `make -n` prints a plain name as it is), else single-quoted.
# $(call args,LIST): each word of LIST so (SET="k=v k2=v2": SET='max_iter=3;id' is one word, which
# Python refuses). Options take their value as --opt=VALUE, so a value starting with '-' is a value;
# KEY=VALUE words come after --, so SET=--force is a bad override, not an option.
quote = '$(subst ','\'',$(1))'
PLAIN_CHARS := a b c d e f g h i j k l m n o p q r s t u v w x y z A B C D E F G H I J K L M N O P Q R \
  S T U V W X Y Z 0 1 2 3 4 5 6 7 8 9 _ @ % + = : , . / -
without = $(if $(2),$(call without,$(subst $(firstword $(2)),,$(1)),$(wordlist 2,$(words $(2)),$(2))),$(1))
arg = $(if $(filter X--X,X-$(call without,$(1),$(PLAIN_CHARS))-X),$(if $(1),$(1),''),$(call quote,$(1)))
args = $(foreach w,$(1),$(call arg,$(w)))
ROOT_ARG := $(call arg,$(ROOT))
PY := $(ROOT)/.venv/bin/python
PY_ARG = $(call arg,$(PY))

# Training: `make train DATASET=prostate ACT=rrelu SOLVER=nesterov [ITERS=N] [SEED=K] [SET="key=value ..."]`
# The lists come from Python (core/names.py), never repeated here.
NAMES = $(shell cd $(ROOT_ARG) && $(PY_ARG) -m core.names $(1) 2>/dev/null)
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
PROFILE_paper = $(shell cd $(ROOT_ARG) && $(PY_ARG) -m core.paper profile 2>/dev/null)
PROFILE_paper-dense = $(shell cd $(ROOT_ARG) && $(PY_ARG) -m core.paper profile dense 2>/dev/null)
PROFILE_short :=
# Another PROFILE would train the short schedule without a word: refused (recipes only).
CHECK_PROFILE = $(if $(filter undefined,$(origin PROFILE_$(PROFILE))),$(error make $@: PROFILE=$(PROFILE) is not a schedule: choose short, paper or paper-dense))
PROFILE_ARGS = $(CHECK_PROFILE)$(PROFILE_$(PROFILE))
# LAYERS: how Caffe builds the activations, never what they compute. act_layer=auto puts them inside
# the convolutions where this Caffe (patch 0011), the CPU and the activation allow it (the same
# numbers, faster per step: docs/performance.md); LAYERS= keeps the stock layers. SET= can override it too.
LAYERS ?= act_layer=auto
TRAIN_ARGS = $(call args,$(LAYERS) $(PROFILE_ARGS)) $(if $(ITERS),$(call arg,max_iter=$(ITERS))) $(if $(GPU_ID),solver_mode=GPU) $(call args,$(SET))
# make grid SCHEDULER=slurm: one Slurm job array (tools/slurm/grid.sbatch) and an evaluation job;
# SBATCH_ARGS: site options for both (partition, account, time limit); DRY_RUN=1 prints the sbatch
# commands. The local one-node cluster (make slurm-up) lives in SLURM_DIR on ports SLURM_PORT, +1.
SCHEDULER ?= local
SBATCH_ARGS ?=
export SBATCH_ARGS
SLURM_LOGS ?= $(ROOT)/logs/slurm
SLURM_DIR ?= $(ROOT)/.slurm
SLURM_PORT ?= 16817
# make pacs-up: a DICOM server of our own (Orthanc with DICOMweb, tools/pacs/orthanc.sh, docs/pacs.md)
# in PACS_DIR (a relative one is the caller's) on 127.0.0.1:PACS_PORT.
PACS_DIR ?= $(ROOT)/.pacs
PACS_PORT ?= 18042
PACS_DIR_ABS = $(if $(filter /%,$(firstword $(PACS_DIR))),,$(CALLER_DIR)/)$(PACS_DIR)
# Without SLURM_CONF, a running local cluster (make slurm-up) is the one used; else the system's.
SLURM_ENV = $(if $(SLURM_CONF),,$(if $(wildcard $(SLURM_DIR)/run/slurmctld.pid),SLURM_CONF=$(call arg,$(SLURM_DIR)/etc/slurm.conf)))
# The directory make was called from (make -C changes it; the caller's shell exported PWD): a
# relative IN or OUT is relative to it.
CALLER_DIR := $(or $(value PWD),$(CURDIR))
# make grid holds runs/ (core/locks.py): a second grid or reproduce on this checkout is refused
# with the first one's pid instead of training the same runs twice; each trainer locks its run too.
HOLD_RUNS = $(PY_ARG) -m core.locks $(call arg,$(ROOT)/.runs.lock) "make grid" $(call arg,$(ROOT)/runs) --
# make grid SOLVER_FILES="a.prototxt b.prototxt": the files (a relative one is the caller's) are
# read before any run starts, and each grid run names its file by the stem (core.names).
SOLVER_FILES_ABS = $(foreach f,$(SOLVER_FILES),$(if $(filter /%,$(f)),$(f),$(CALLER_DIR)/$(f)))
GRID_SOLVER_ARGS = $(foreach f,$(SOLVER_FILES_ABS),--grid-solver-file $(call quote,$(f)))
CHECK_SOLVER_FILES = $(if $(SOLVER_FILES),(cd $(ROOT_ARG) && $(PY_ARG) -m core.user_solver $(foreach f,$(SOLVER_FILES_ABS),$(call quote,$(f))) -- $(TRAIN_ARGS)),true)
# The arguments of core.names grid: GRID, SEEDS, DATASETS, SOLVERS, SOLVER_FILES, one word each.
GRID_NAMES_ARGS = $(call arg,$(GRID)) $(call arg,$(SEEDS)) $(call arg,$(DATASETS)) $(call arg,$(SOLVERS)) $(call arg,$(SOLVER_FILES_ABS))
# $(call require,VARS): stop with one line naming the first unset variable (recipes only).
require = $(foreach v,$(1),$(if $($(v)),,$(error make $@: set $(v)=... ($(v) is empty; see make help))))

.PHONY: help setup test test-kernels test-fast check-venv nets data train grid curves eval figures reproduce bench upscale
.PHONY: bench-cohort
.PHONY: grid-status slurm-up slurm-down pacs-up pacs-down gpu-check regions export reference thickslice thickslice-validate readme-figure
# make setup GPU=1: Caffe with CUDA (tools/setup/setup_gpu.sh); GPU=0: CPU-only; auto: 1 when
# nvidia-smi lists a GPU.
GPU ?= auto
# GPU_ID=N: train, grid, eval and upscale compute on GPU N (a CUDA build: make setup GPU=1)
GPU_ARG = $(if $(GPU_ID),--gpu=$(call arg,$(GPU_ID)))

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(call args,$(MAKEFILE_LIST)) | sed -E 's/:.*## /\t/' | expand -t 16

setup:  ## Debian packages, Caffe (built once into ~/.cache/medsr-caffe), .venv [GPU=1|0|auto]
	@GPU=$(call arg,$(GPU)) bash $(ROOT_ARG)/tools/setup/setup.sh

gpu-check: check-venv  ## on a machine with a GPU: device query, GPU vs CPU loss curve, step times [GPU_ID=0]; without one, says so
	@cd $(ROOT_ARG) && $(PY_ARG) -m tools.gpu_check --gpu=$(call arg,$(or $(GPU_ID),0))

check-venv:
	@test -x $(PY_ARG) || { echo "make: .venv is missing: run 'make setup' first" >&2; exit 1; }

test: check-venv  ## the pytest suite (CPU, minutes)
	@cd $(ROOT_ARG) && $(PY_ARG) -m pytest

test-kernels: check-venv  ## the tests marked blas again under an older OpenBLAS core type (a child process's OPENBLAS_CORETYPE) [CORES="Haswell Zen SkylakeX Sandybridge"] [ALL=1: every test]
	@cd $(ROOT_ARG) && $(PY_ARG) -m tools.blas_kernels $(if $(CORES),--cores $(call args,$(CORES))) $(if $(ALL),--all-tests)

test-fast: check-venv  ## the pytest suite without the tests marked slow or slurm
	@cd $(ROOT_ARG) && $(PY_ARG) -m pytest -m "not slow and not slurm"

nets: check-venv  ## regenerate models/ and solvers/ from core/config.py
	@cd $(ROOT_ARG) && GLOG_minloglevel=2 $(PY_ARG) -m tools.generate

# make data IN=<study tree> NAME= SERIES=: your cohort, split by patient (docs/data.md); IN is one
# path (spaces allowed), relative to the caller's folder; JOBS processes read the headers.
COHORT_ARGS = --input=$(call quote,$(if $(filter /%,$(IN)),,$(CALLER_DIR)/)$(IN)) --name=$(call arg,$(NAME)) \
  --series=$(call quote,$(SERIES)) $(if $(TEST_PATIENTS),--test-patients=$(call quote,$(TEST_PATIENTS))) \
  $(if $(TEST_SLICES),--test-slices=$(call arg,$(TEST_SLICES))) --jobs=$(call arg,$(JOBS))
data: check-venv  ## the default data sets (core/datasets.py) into data/; your cohort: IN=study tree NAME= SERIES=regex [TEST_PATIENTS=N|ID,ID] [TEST_SLICES=K] [JOBS=N]
	$(if $(IN),$(call require,NAME SERIES))@cd $(ROOT_ARG) && $(PY_ARG) -m data_prep $(if $(IN),$(COHORT_ARGS),$(foreach d,$(or $(DATASET),$(DATASETS)),--dataset=$(call arg,$(d))))

train: check-venv  ## one run: DATASET= ACT= SOLVER= (or SOLVER_FILE=your_solver.prototxt) [ITERS=] [SEED=K] [PROFILE=paper] [SET="k=v ..."] [RESUME=1|RESUME_FROM=N|FORCE=1]
	$(call require,DATASET ACT)$(if $(or $(SOLVER),$(SOLVER_FILE)),,$(error make train: set SOLVER=... or SOLVER_FILE=...; see make help))@cd $(ROOT_ARG) && $(PY_ARG) -m tools.train --dataset=$(call arg,$(DATASET)) --act=$(call arg,$(ACT)) $(if $(SOLVER_FILE),--solver-file=$(call quote,$(if $(filter /%,$(SOLVER_FILE)),,$(CALLER_DIR)/)$(SOLVER_FILE)),--solver=$(call arg,$(SOLVER))) $(if $(SEED),--seed=$(call arg,$(SEED))) $(if $(or $(RESUME),$(RESUME_FROM)),--resume) $(if $(RESUME_FROM),--resume-from=$(call arg,$(RESUME_FROM))) $(if $(FORCE),--force) $(GPU_ARG) -- $(TRAIN_ARGS)

grid: check-venv  ## GRID=paper (rrelu_nesterov, relu_sgd) or full (2x2) x DATASETS x SEEDS [SOLVERS="TYPE ...": Caffe solver types instead; SOLVER_FILES="a.prototxt ...": your solver files too; each with the paper's two activations]; -j safe; resumes; SCHEDULER=slurm
ifeq ($(SCHEDULER),slurm)
	$(CHECK_PROFILE)@cd $(ROOT_ARG) && $(PY_ARG) -m core.names grid $(GRID_NAMES_ARGS) >/dev/null
	@$(CHECK_SOLVER_FILES)
	@$(if $(DRY_RUN),,$(MAKE) --no-print-directory -C $(ROOT_ARG) data)
	@cd $(ROOT_ARG) && $(SLURM_ENV) $(PY_ARG) -m tools.slurm.submit --grid=$(call arg,$(GRID)) --seeds=$(call arg,$(SEEDS)) \
	  --datasets=$(call arg,$(DATASETS)) --solvers=$(call arg,$(SOLVERS)) --solver-files=$(call arg,$(SOLVER_FILES_ABS)) \
	  --profile=$(call arg,$(PROFILE)) --iters=$(call arg,$(ITERS)) --set=$(call arg,$(SET)) \
	  --logs=$(call arg,$(SLURM_LOGS)) $(if $(DRY_RUN),--dry-run) -- $(TRAIN_ARGS)
else ifeq ($(SCHEDULER),local)
	$(CHECK_PROFILE)@cd $(ROOT_ARG) && names=$$($(PY_ARG) -m core.names grid $(GRID_NAMES_ARGS)) && read -r -a runs <<< "$$names" && \
	  $(CHECK_SOLVER_FILES) && \
	  $(HOLD_RUNS) $(MAKE) --no-print-directory -C $(ROOT_ARG) "$${runs[@]/#/grid-}" $(if $(SOLVER_FILES),SOLVER_FILES=$(call quote,$(SOLVER_FILES_ABS)))
else
	$(error make grid: SCHEDULER=$(SCHEDULER): choose local (the default) or slurm)
endif

grid-status: check-venv  ## the last `make grid SCHEDULER=slurm`: each run pending, running, finished or failed [JOB=array id]
	@cd $(ROOT_ARG) && $(SLURM_ENV) $(PY_ARG) -m tools.slurm.status --logs=$(call arg,$(SLURM_LOGS)) $(if $(JOB),--job=$(call arg,$(JOB)))

slurm-up:  ## a one-node Slurm cluster in SLURM_DIR (.slurm/): installs the Debian packages if missing; prints export SLURM_CONF=...
	@bash $(ROOT_ARG)/tools/slurm/local_cluster.sh up --dir $(call arg,$(SLURM_DIR)) --port $(call arg,$(SLURM_PORT))

slurm-down:  ## stop the daemons slurm-up started (their jobs are cancelled first)
	@bash $(ROOT_ARG)/tools/slurm/local_cluster.sh down --dir $(call arg,$(SLURM_DIR))

pacs-up:  ## a DICOM server (Orthanc with DICOMweb) in PACS_DIR (.pacs/) on 127.0.0.1:PACS_PORT (18042), password on: installs the Debian packages if missing; prints export MEDSR_PACS_URL=... MEDSR_PACS_CREDENTIALS=...
	@bash $(ROOT_ARG)/tools/pacs/orthanc.sh up --dir $(call quote,$(PACS_DIR_ABS)) --port $(call arg,$(PACS_PORT))

pacs-down:  ## stop the server pacs-up started (its stored series stay in PACS_DIR)
	@bash $(ROOT_ARG)/tools/pacs/orthanc.sh down --dir $(call quote,$(PACS_DIR_ABS))

# One independent run per target (dataset-act-solver-seed): its own run directory; finished runs
# are left alone. The run's name (the stem $*) is one word too: a solver file's stem is in it.
# Under make -j (make reproduce) several runs share the terminal: each prints its progress as
# lines (tools/train_progress.py, progress_style) instead of a bar that redraws over the others'.
grid-%: data
	@cd $(ROOT_ARG) && $(if $(filter-out -j1,$(filter -j%,$(MAKEFLAGS))),MEDSR_PROGRESS=lines) $(PY_ARG) -m tools.train --resume \
	  --grid-run $(call arg,$*) $(GRID_SOLVER_ARGS) $(GPU_ARG) -- $(TRAIN_ARGS)

reference: check-venv data  ## long-schedule weights: DATASET= [ACT= SOLVER=: another variant] [ITERS=] [SET="k=v ..."] -> models/reference/<dataset>/ (models/long/<dataset>/<act>_<solver>/; resumes)
	$(call require,DATASET)@cd $(ROOT_ARG) && $(PY_ARG) -m tools.reference --dataset=$(call arg,$(DATASET)) $(if $(ACT),--act=$(call arg,$(ACT))) $(if $(SOLVER),--solver=$(call arg,$(SOLVER))) $(if $(ITERS),--iters=$(call arg,$(ITERS))) -- $(call args,$(LAYERS) $(SET))

curves: check-venv  ## Figs. 3-4 (PSNR vs iterations) per data set into figures/ [METRIC=psnr|ssim]
	@cd $(ROOT_ARG) && $(PY_ARG) -m tools.curves $(if $(METRIC),--metric=$(call arg,$(METRIC)))

eval: check-venv  ## PSNR/SSIM of bicubic and every run, per data set: results/<dataset>.{json,csv,md}
	@cd $(ROOT_ARG) && $(PY_ARG) -m eval --built $(call args,$(DATASETS)) $(GPU_ARG)

regions: check-venv  ## where a run gains on bicubic: dark region vs the rest: DATASET= RUN= [ITERS="6000 40000"] [DARK=20]
	$(call require,DATASET RUN)@cd $(ROOT_ARG) && $(PY_ARG) -m eval.regions --dataset=$(call arg,$(DATASET)) --run=$(call quote,$(RUN)) $(if $(ITERS),--iters $(call args,$(ITERS))) $(if $(DARK),--dark=$(call arg,$(DARK)))

figures: check-venv  ## Fig. 6 grids (LR | bicubic | network | original) into figures/
	@cd $(ROOT_ARG) && $(PY_ARG) -m eval.figures

readme-figure: check-venv  ## the README's picture, bicubic | ours | original on a prostate test slice (the reference weights): docs/readme_figure.png
	@cd $(ROOT_ARG) && $(PY_ARG) -m tools.readme_figure

reproduce: check-venv  ## the main job: data, grid (GRID=paper, SEEDS=1), eval, curves, figures, REPORT.md
	@$(MAKE) --no-print-directory -C $(ROOT_ARG) data
	@OMP_NUM_THREADS=$(call arg,$(RUN_THREADS)) OPENBLAS_NUM_THREADS=$(call arg,$(RUN_THREADS)) \
	  $(MAKE) --no-print-directory -C $(ROOT_ARG) -j$(call arg,$(JOBS)) grid
	@$(MAKE) --no-print-directory -C $(ROOT_ARG) eval curves figures
	@cd $(ROOT_ARG) && $(PY_ARG) -m eval.report --command=$(call arg,make reproduce GRID=$(call arg,$(GRID)) SEEDS=$(call arg,$(SEEDS)) PROFILE=$(call arg,$(PROFILE))$(if $(ITERS), ITERS=$(call arg,$(ITERS))))

bench: check-venv  ## Caffe training step of each configuration (tools/bench_train.py, CONFIGS) vs PyTorch, side by side; a GPU column where one is: bench/train_step.json
	@cd $(ROOT_ARG) && { $(PY_ARG) -c 'import torch' 2>/dev/null || $(PY_ARG) -m pip install --quiet -r tools/setup/requirements-bench.txt; }
	@cd $(ROOT_ARG) && GLOG_minloglevel=2 $(PY_ARG) -m tools.bench_train $(call args,$(BENCH_ARGS))

# make bench-cohort: synthetic cohorts of SIZES T2 axial series each, built with -j 1 and -j 2
# (tools/bench_cohort.py; BENCH_ARGS="--work DIR --keep --jobs 1,2" its other options). The
# disk each size takes: docs/performance.md.
SIZES ?= 10,100,1000
bench-cohort: check-venv  ## the cohort data build's growth: time, peak memory of the process tree, disk, for SIZES series with -j 1 and -j 2: bench/cohort.json, bench/cohort.md [SIZES=10,100,1000] [BENCH_ARGS=]
	@cd $(ROOT_ARG) && GLOG_minloglevel=2 $(PY_ARG) -m tools.bench_cohort --sizes=$(call arg,$(SIZES)) $(call args,$(BENCH_ARGS))

# make upscale's input: IN= and OUT=, or STUDY= (a study on a PACS) with SERIES=
upscale_input = $(if $(STUDY),$(if $(SERIES),,$(error make upscale: STUDY= needs SERIES=REGEX, the series of the study to upscale ('.' for all))),$(call require,IN OUT))

upscale: check-venv  ## apply a run x3 to your scan: IN=file/folder OUT=path RUN=runs/<dataset>/<act>_<solver>/seed<k> or REFERENCE=<dataset> [SERIES=REGEX: IN is a study tree, each matching series x3] [MEM=MB] [FORCE=1]; or STUDY=<StudyInstanceUID> SERIES=REGEX [PACS=url, default MEDSR_PACS_URL] [OUT=dir]: from a PACS, each derived series stored back (docs/pacs.md)
	$(upscale_input)$(if $(or $(RUN),$(REFERENCE)),,$(error make upscale: set RUN=<run directory> or REFERENCE=<dataset> (models/reference/); see make help))@cd $(call quote,$(CALLER_DIR)) && $(PY_ARG) -m inference.upscale $(if $(STUDY),--study=$(call quote,$(STUDY)) $(if $(or $(PACS),$(MEDSR_PACS_URL)),--pacs=$(call quote,$(or $(PACS),$(MEDSR_PACS_URL)))),--in=$(call quote,$(IN))) $(if $(OUT),--out=$(call quote,$(OUT))) $(if $(REFERENCE),--reference=$(call quote,$(REFERENCE))) $(if $(RUN),--run=$(call quote,$(RUN))) $(if $(SERIES),--series=$(call quote,$(SERIES))) $(if $(FORCE),--force) $(if $(MEM),--memory-budget=$(call quote,$(MEM))) $(GPU_ARG)

export: check-venv  ## a run's net as ONNX, verified against pycaffe in ONNX Runtime and OpenCV: OUT=model.onnx RUN=runs/<dataset>/<act>_<solver>/seed<k> or REFERENCE=<dataset> [FORCE=1]
	$(call require,OUT)$(if $(or $(RUN),$(REFERENCE)),,$(error make export: set RUN=<run directory> or REFERENCE=<dataset> (models/reference/); see make help))@cd $(call quote,$(CALLER_DIR)) && $(PY_ARG) -m inference.export --out=$(call quote,$(OUT)) $(if $(REFERENCE),--reference=$(call quote,$(REFERENCE))) $(if $(RUN),--run=$(call quote,$(RUN))) $(if $(FORCE),--force)

# Through-plane super-resolution trained on the scan itself (tools/thickslice.py, docs/thickslice.md).
# SLICE_PROFILE, not PROFILE: PROFILE names the training schedule above.
# make thickslice's input: IN= and OUT=, or STUDY= (a study on a PACS) with SERIES=
thickslice_input = $(if $(STUDY),$(if $(SERIES),,$(error make thickslice: STUDY= needs SERIES=REGEX, the series of the study to refine ('.' for all))),$(call require,IN OUT))

thickslice: check-venv  ## refine a thick-slice scan's slices, trained on the scan itself (SMORE): IN=scan OUT=path [FACTOR=auto|N] [ITERS=] [ACT= SOLVER=] [SLICE_PROFILE=gaussian|boxcar] [SET="k=v ..."] [FORCE=1]; or STUDY=<StudyInstanceUID> SERIES=REGEX [PACS=url] [OUT=dir]: from a PACS, each refined series stored back
	$(thickslice_input)@cd $(call quote,$(CALLER_DIR)) && $(PY_ARG) -m tools.thickslice $(if $(STUDY),--study=$(call quote,$(STUDY)) --series=$(call quote,$(SERIES)) $(if $(or $(PACS),$(MEDSR_PACS_URL)),--pacs=$(call quote,$(or $(PACS),$(MEDSR_PACS_URL)))),--in=$(call quote,$(IN))) $(if $(OUT),--out=$(call quote,$(OUT))) $(if $(FACTOR),--factor=$(call arg,$(FACTOR))) $(if $(ITERS),--iters=$(call arg,$(ITERS))) $(if $(ACT),--act=$(call arg,$(ACT))) $(if $(SOLVER),--solver=$(call arg,$(SOLVER))) $(if $(SLICE_PROFILE),--profile=$(call arg,$(SLICE_PROFILE))) $(if $(FORCE),--force) -- $(call args,$(LAYERS) $(SET))

# ECLARE, the public self-supervised method, runs beside it from its own environment .venv-eclare
# (installed on first use: tools/eclare.py); ECLARE_PATCHES=N its training patches (default: the
# reduced CPU schedule of tools/eclare.py; 1000000 is ECLARE's own), ECLARE_PATCHES=0 leaves it out.
thickslice-validate: check-venv  ## make thickslice on Colin27 (or VOLUME=inia19, the tuning volume) thickened x3 and x6, scored against its thin slices beside cubic, a cubic spline, the reference net and ECLARE (installed into .venv-eclare), with wall times: results/thickslice/<volume>/ [FACTORS="3 6"] [ITERS=] [ECLARE_PATCHES=N|0] [VOLUME=colin27|inia19]
	@cd $(ROOT_ARG) && $(PY_ARG) -m tools.thickslice_validate --install-eclare $(if $(VOLUME),--volume=$(call arg,$(VOLUME))) $(if $(FACTORS),--factors $(call args,$(FACTORS))) $(if $(ITERS),--iters=$(call arg,$(ITERS))) $(if $(ECLARE_PATCHES),--eclare-patches=$(call arg,$(ECLARE_PATCHES))) -- $(call args,$(LAYERS) $(SET))
