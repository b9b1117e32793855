# Migician recipe pack: converters -> data files -> recipes -> checkpoints -> merge_tool -> eval.
# `make help` lists the targets. Two environments (see README "Environments"):
#   .venv       training: LLaMA-Factory 0.9.5 (transformers <= 5.6)
#   .venv-eval  evaluation: vLLM (transformers >= 5.16)

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
# cpu or cuda; detected once, override with DEVICE=cpu.
DEVICE ?= $(shell nvidia-smi -L >/dev/null 2>&1 && echo cuda || echo cpu)

VENV := .venv
VENV_EVAL := .venv-eval
TRAIN_STAMP := $(VENV)/.installed-$(DEVICE)
EVAL_STAMP := $(VENV_EVAL)/.installed-$(DEVICE)
TRAIN_PY := $(VENV)/bin/python
EVAL_PY := $(VENV_EVAL)/bin/python

# ---- training knobs (one node by default) ---------------------------------------
BASE_MODEL ?= Qwen/Qwen2-VL-7B-Instruct
# GPUs per node: all that nvidia-smi lists (the paper used 8); one process on the CPU.
NGPUS ?= $(if $(filter cuda,$(DEVICE)),$(shell nvidia-smi -L 2>/dev/null | grep -c '^GPU'),1)
NNODES ?= 1
NODE_RANK ?= 0
MASTER_ADDR ?= 127.0.0.1
MASTER_PORT ?= 29500
GLOBAL_BATCH ?= 48
LR2 ?= 4.0e-6
STAGE1_OUT ?= saves/stage1
STAGE2_OUT ?= saves/stage2
MERGED_OUT ?= saves/merged
# The RL stage (MIRG-RL): trajectory SFT from BASE_MODEL (e.g. BASE_MODEL=saves/merged), then GRPO from it.
TRAJ_OUT ?= saves/traj_sft
GRPO_OUT ?= saves/grpo
TRAJ_GLOBAL_BATCH ?= 128
# GRPO's global batch counts completions: 128 = 16 prompts x 8 generations (8 per device x 2 x 8 GPUs).
GRPO_GLOBAL_BATCH ?= 128
# Extra `key=value` overrides for `python -m rl train` (TRL GRPOConfig fields or the pack's keys), e.g.
#   RL_ARGS="use_vllm=true reward_profile=univg"
RL_ARGS ?=
# The base model's family (families/) sets the template, the pixel budget and the data's box format: read
# from the model's config.json (model_type); FAMILY=qwen2-vl|qwen2.5-vl|qwen3-vl|qwen3.5|internvl forces it.
# The default BASE_MODEL is a Qwen2-VL (its family is known without a download).
FAMILY ?=
family_flags = $(if $(FAMILY),--family $(FAMILY)) $(if $(filter file,$(origin BASE_MODEL)),--default-family qwen2-vl)
# Extra `key=value` overrides passed to llamafactory-cli, e.g.
#   TRAIN_ARGS="flash_attn=fa2 enable_liger_kernel=true deepspeed=recipes/ds_z2_config.json"
TRAIN_ARGS ?=

# ---- data and eval knobs ---------------------------------------------------------------
DATA_ROOT ?=
DATA_OUT ?= data
CHECK_IMAGES ?=
FORCE ?=
MODEL ?=
BENCH ?= $(DATA_ROOT)/MIG-Bench/MIG_data.json
BACKEND ?= vllm
EVAL_OUT ?= outputs/eval/$(notdir $(patsubst %/,%,$(MODEL)))
EVAL_ARGS ?=
REFCOCO_ROOT ?= $(DATA_ROOT)
SUITE ?=

.PHONY: help setup setup-flash-attn test test-unit lint format data stage1 stage2 merge traj-sft grpo eval eval-suite demo clean distclean

help: ## list the targets
	@grep -E '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

# ---- environments ----------------------------------------------------------------------
setup: $(TRAIN_STAMP) $(EVAL_STAMP) ## build both environments (idempotent)

$(TRAIN_STAMP): requirements/train.txt requirements/train-cuda.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q pip==25.3
	$(VENV)/bin/pip install -q -r requirements/train.txt
	if [ "$(DEVICE)" = cuda ]; then $(VENV)/bin/pip install -q -r requirements/train-cuda.txt; fi
	$(VENV)/bin/pip install -q --no-deps -e .
	touch $@

$(EVAL_STAMP): requirements/eval-cpu.txt requirements/eval-cuda.txt scripts/setup_eval_env.sh pyproject.toml
	bash scripts/setup_eval_env.sh $(VENV_EVAL) $(DEVICE)
	touch $@

setup-flash-attn: $(TRAIN_STAMP) ## (CUDA only) build flash-attn 2 into .venv
	$(VENV)/bin/pip install -q flash-attn==2.8.3 --no-build-isolation

# ---- checks ----------------------------------------------------------------------------
# Both write bytecode even where PYTHONDONTWRITEBYTECODE is set: pytest then keeps its rewritten test
# modules, and every CLI a test starts loads this repo's modules compiled (collection 10.8 s -> 3.8 s).
test test-unit: export PYTHONDONTWRITEBYTECODE :=

test: setup ## run the test suite (trains and evaluates tiny models on the CPU)
	$(TRAIN_PY) -m pytest -q -ra --durations=30 tests

# One pytest worker per core (pytest-xdist), when the existing .venv has it.
test-unit: | $(TRAIN_PY) ## the fast tests: no model, no LLaMA-Factory, no vLLM (markers in pyproject.toml)
	$(TRAIN_PY) -m pytest -q -ra --durations=5 $$($(TRAIN_PY) -c "import xdist" 2>/dev/null && echo --numprocesses=auto) -m "not slow and not vllm and not train" tests

# test-unit needs .venv to exist, not to be reinstalled first after an edit of requirements/ or pyproject.toml.
$(TRAIN_PY):
	$(MAKE) --no-print-directory $(TRAIN_STAMP)

lint: $(TRAIN_STAMP) ## ruff lint and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(TRAIN_STAMP) ## ruff format and autofix
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# ---- the real pipeline -----------------------------------------------------------------
data: $(TRAIN_STAMP) ## convert DATA_ROOT into DATA_OUT (data/), build both mixtures, write DATA_OUT/dataset_info.json (CHECK_IMAGES=1 decodes every image)
	@test -n "$(DATA_ROOT)" || { echo "usage: make data DATA_ROOT=/path/holding/MGrounding-630k"; exit 2; }
	@fam=$$($(TRAIN_PY) -m families detect $(BASE_MODEL) $(family_flags)) || exit 2; set -x; \
	$(TRAIN_PY) -m converters all --data-root $(DATA_ROOT) --output-dir $(DATA_OUT) $(if $(CHECK_IMAGES),--check-images) \
		--box-format $$fam $(if $(wildcard $(BASE_MODEL)/config.json),--base-model $(BASE_MODEL))

# Training reads the registry `make data` wrote beside the data: dataset_dir=$(DATA_OUT) (a later
# dataset_dir=... in TRAIN_ARGS/RL_ARGS wins). need_registry(target, extra args, model) stops with the command to
# run when there is no registry, or when the data was converted for another family than the model's
# (`families check-data`: the converter reports record the box format; data without that record gets a warning).
train_dataset_dir = $(lastword $(patsubst dataset_dir=%,%,$(filter dataset_dir=%,dataset_dir=$(DATA_OUT) $(1))))
need_registry = @test -f $(call train_dataset_dir,$(2))/dataset_info.json || { echo "make $(1): no dataset registry in $(call train_dataset_dir,$(2))/ (dataset_info.json); build it with: make data DATA_ROOT=/path/holding/MGrounding-630k DATA_OUT=$(call train_dataset_dir,$(2))" >&2; exit 2; }; \
	$(TRAIN_PY) -m families check-data $(call train_dataset_dir,$(2)) --model $(3) $(family_flags) >/dev/null || exit 2

# Distributed launch: LLaMA-Factory's launcher runs torchrun when FORCE_TORCHRUN=1.
# The per-device batch and accumulation keep the global batch at $(GLOBAL_BATCH).
# The tokenized-data cache gets a fingerprint of the data it holds (scripts/tokenized_path.py),
# so new data, template or cutoff never reuse stale tokens.
batch_split = $(shell $(PYTHON) scripts/global_batch.py --global-batch $(1) --world-size $$(( $(NGPUS) * $(NNODES) )) $(if $(2),--max-per-device $(2)))
LAUNCH = $(if $(filter cuda,$(DEVICE)),FORCE_TORCHRUN=1 NPROC_PER_NODE=$(NGPUS) NNODES=$(NNODES) NODE_RANK=$(NODE_RANK) MASTER_ADDR=$(MASTER_ADDR) MASTER_PORT=$(MASTER_PORT),)
CPU_ARGS = $(if $(filter cpu,$(DEVICE)),use_cpu=true bf16=false deepspeed=null,)
# train_stage(recipe, overrides, global batch, model whose family decides the template and pixel budget;
# a Qwen2-VL model gets no extra override, so its command line is the recipe's own). The trained folder then
# records the pixel budget it was trained with (image_budget.json), which eval feeds by default.
define train_stage
	@split="$(call batch_split,$(3))"; test -n "$$split" || exit 2; set -- $$split; \
	echo "global batch $(3) = $$1 per device x $$2 accumulation x $$(( $(NGPUS) * $(NNODES) )) $(if $(filter cuda,$(DEVICE)),GPUs,CPU process)"; \
	fam=$$($(TRAIN_PY) -m families train-args $(1) --model $(4) $(family_flags)) || exit 2; \
	tok=$$($(TRAIN_PY) scripts/tokenized_path.py $(1) $(2) $$fam $(CPU_ARGS) $(TRAIN_ARGS)) || exit 2; \
	$(LAUNCH) $(VENV)/bin/llamafactory-cli train $(1) per_device_train_batch_size=$$1 gradient_accumulation_steps=$$2 $(2) $$fam $(CPU_ARGS) $(TRAIN_ARGS) $$tok \
		&& $(TRAIN_PY) -m families record-budget $(1) $(2) $$fam $(TRAIN_ARGS) $(family_flags)
endef
# GRPO: `accelerate launch` over the GPUs (DeepSpeed ZeRO-3 from the recipe), one process on the CPU.
RL_LAUNCH = $(if $(filter cuda,$(DEVICE)),$(VENV_EVAL)/bin/accelerate launch --num_processes $$(( $(NGPUS) * $(NNODES) )) --num_machines $(NNODES) --machine_rank $(NODE_RANK) --main_process_ip $(MASTER_ADDR) --main_process_port $(MASTER_PORT) -m rl,$(EVAL_PY) -m rl)
RL_CPU_ARGS = $(if $(filter cpu,$(DEVICE)),use_cpu=true bf16=false deepspeed=null gradient_checkpointing=false,)

stage1: $(STAGE1_OUT)/all_results.json ## stage 1 (1M examples); resumes from the last checkpoint if interrupted
$(STAGE1_OUT)/all_results.json: | $(TRAIN_STAMP)
	$(call need_registry,stage1,$(TRAIN_ARGS),$(BASE_MODEL))
	$(call train_stage,recipes/stage1.yaml,model_name_or_path=$(BASE_MODEL) output_dir=$(STAGE1_OUT) dataset_dir=$(DATA_OUT),$(GLOBAL_BATCH),$(BASE_MODEL))

stage2: $(STAGE2_OUT)/all_results.json ## stage 2 (200k examples) from stage 1's weights
$(STAGE2_OUT)/all_results.json: $(STAGE1_OUT)/all_results.json | $(TRAIN_STAMP)
	$(call need_registry,stage2,$(TRAIN_ARGS),$(STAGE1_OUT))
	$(call train_stage,recipes/stage2.yaml,model_name_or_path=$(STAGE1_OUT) output_dir=$(STAGE2_OUT) dataset_dir=$(DATA_OUT) learning_rate=$(LR2),$(GLOBAL_BATCH),$(STAGE1_OUT))

merge: $(MERGED_OUT)/config.json ## average stage 1 and stage 2 (uniform weights) into saves/merged
$(MERGED_OUT)/config.json: $(STAGE1_OUT)/all_results.json $(STAGE2_OUT)/all_results.json | $(TRAIN_STAMP)
	$(TRAIN_PY) -m merge_tool --models $(STAGE1_OUT) $(STAGE2_OUT) --output $(MERGED_OUT) $(if $(FORCE),--force)

traj-sft: $(TRAJ_OUT)/all_results.json ## MIRG-RL trajectory SFT from BASE_MODEL (e.g. saves/merged); resumable
$(TRAJ_OUT)/all_results.json: | $(TRAIN_STAMP)
	$(call need_registry,traj-sft,$(TRAIN_ARGS),$(BASE_MODEL))
	$(call train_stage,recipes/traj_sft.yaml,model_name_or_path=$(BASE_MODEL) output_dir=$(TRAJ_OUT) dataset_dir=$(DATA_OUT),$(TRAJ_GLOBAL_BATCH),$(BASE_MODEL))

grpo: $(GRPO_OUT)/train_results.json ## GRPO (TRL) on the RL set from saves/traj_sft; resumes from its last checkpoint
$(GRPO_OUT)/train_results.json: $(TRAJ_OUT)/all_results.json | $(EVAL_STAMP)
	$(call need_registry,grpo,$(RL_ARGS),$(TRAJ_OUT))
	@split="$(call batch_split,$(GRPO_GLOBAL_BATCH),8)"; test -n "$$split" || exit 2; set -- $$split; \
	echo "GRPO global batch $(GRPO_GLOBAL_BATCH) completions = $$1 per device x $$2 accumulation x $$(( $(NGPUS) * $(NNODES) ))"; \
	fam=$$($(TRAIN_PY) -m families detect $(TRAJ_OUT) $(family_flags)) || exit 2; \
	$(RL_LAUNCH) train recipes/grpo.yaml model_name_or_path=$(TRAJ_OUT) output_dir=$(GRPO_OUT) dataset_dir=$(DATA_OUT) \
		per_device_train_batch_size=$$1 gradient_accumulation_steps=$$2 family=$$fam $(RL_CPU_ARGS) $(RL_ARGS)

eval: $(EVAL_STAMP) ## score MODEL on MIG-Bench (BENCH=.../MIG_data.json, BACKEND=vllm|hf|openai)
	@test -n "$(MODEL)" || { echo "usage: make eval MODEL=saves/merged BENCH=/path/MIG-Bench/MIG_data.json"; exit 2; }
	$(EVAL_PY) -m eval run --model $(MODEL) --bench $(BENCH) --backend $(BACKEND) --output-dir $(EVAL_OUT) $(EVAL_ARGS)

eval-suite: $(EVAL_STAMP) ## the paper's tables for MODEL: SUITE=mig,refcoco,multi-image (BENCH=, REFCOCO_ROOT=, mibench= mmiu= muirbench= blink= mantis=; no data: skipped)
	@test -n "$(MODEL)" || { echo "usage: make eval-suite MODEL=saves/merged [SUITE=mig,refcoco] [BENCH=...] [REFCOCO_ROOT=...]"; exit 2; }
	$(EVAL_PY) -m eval suite --model $(MODEL) --backend $(BACKEND) --output-dir $(EVAL_OUT) \
		$(if $(SUITE),--suite $(SUITE)) $(if $(wildcard $(BENCH)),--mig-bench $(BENCH)) \
		$(if $(wildcard $(REFCOCO_ROOT)),--refcoco-root $(REFCOCO_ROOT)) \
		$(foreach b,mibench mmiu muirbench blink mantis,$(if $($(b)),--$(b) $($(b)))) $(EVAL_ARGS)

# ---- teacher-model data synthesis (datagen/README.md) -----------------------------------
.PHONY: datagen-freeform datagen-trajectories
API_BASE ?= http://127.0.0.1:8000/v1
TEACHER ?= Qwen/Qwen2-VL-72B-Instruct
DATAGEN_OUT ?= data/datagen
datagen-freeform: | $(TRAIN_STAMP) ## free-form QA from DETECTIONS= (COCO layout) IMAGE_DIR= via API_BASE= (models: CAPTION_MODEL= REFINE_MODEL= QA_MODEL=)
	@test -n "$(DETECTIONS)" -a -n "$(IMAGE_DIR)" || { echo "usage: make datagen-freeform DETECTIONS=instances.json IMAGE_DIR=images/ [API_BASE=...]"; exit 2; }
	$(TRAIN_PY) -m datagen freeform --detections $(DETECTIONS) --image-dir $(IMAGE_DIR) --api-base $(API_BASE) \
		--caption-model $(or $(CAPTION_MODEL),$(TEACHER)) --refine-model $(or $(REFINE_MODEL),$(TEACHER)) \
		--qa-model $(or $(QA_MODEL),$(TEACHER)) --output $(DATAGEN_OUT)/freeform $(if $(FORCE),--force) $(DATAGEN_ARGS)

datagen-trajectories: | $(TRAIN_STAMP) ## MIRG-RL trajectories from TRAJ_INPUT= (default data/sharegpt/mg_rl.json) via API_BASE=
	$(TRAIN_PY) -m datagen trajectories --input $(or $(TRAJ_INPUT),$(DATA_OUT)/sharegpt/mg_rl.json) --api-base $(API_BASE) \
		--cot-model $(or $(COT_MODEL),$(TEACHER)) --mapping-model $(or $(MAPPING_MODEL),$(TEACHER)) \
		--reassembly-model $(or $(REASSEMBLY_MODEL),$(TEACHER)) --output $(DATAGEN_OUT)/trajectories $(if $(FORCE),--force) $(DATAGEN_ARGS)

# ---- the CPU demo ----------------------------------------------------------------------
demo: setup ## the whole pipeline on this machine with a tiny model (reuses what is built; FAMILY=qwen2.5-vl|qwen3-vl|qwen3.5|internvl: that family's, in data/demo-FAMILY ...; RL_SEEDS=0,1,2: the RL step over those GRPO seeds too)
	$(TRAIN_PY) -m demo.run --eval-python $(EVAL_PY) $(if $(FAMILY),--family $(FAMILY)) $(if $(RL_SEEDS),--rl-seeds $(RL_SEEDS))

clean: ## remove the demo's data, checkpoints and reports (every family's)
	rm -rf data/demo saves/demo outputs/demo data/demo-* saves/demo-* outputs/demo-*

distclean: clean ## also remove both environments and caches
	rm -rf $(VENV) $(VENV_EVAL) .cache .pytest_cache .ruff_cache
