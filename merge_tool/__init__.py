"""merge_tool: standalone, streaming merging of safetensors checkpoints.

Why it exists: Migician's final model is the average of its stage-1 and
stage-2 weights; mergekit 0.1.5 fails on transformers-5 Qwen2-VL saves. This
package needs only numpy, tqdm and the standard library (not torch,
transformers, LLaMA-Factory or vLLM; see `dtypes` for why not torch), so it
runs in either project environment.

Layout (as in mergekit): `io` reads checkpoints lazily, `st_format` is the
safetensors layout, `dtypes` the element types and the one rounding, `plan`
validates and decides, `methods` holds the arithmetic, `pipeline` streams
chunks through it, `writer` writes shards incrementally, `merge` runs a plan
atomically, `extras` carries the non-weight files over.
"""

from .errors import MergeError
from .merge import run_merge
from .plan import build_plan

__all__ = ["MergeError", "build_plan", "run_merge"]
