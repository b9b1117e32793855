"""The appendix's prompt templates, read from `datagen/prompts/*.txt`.

Why files: the templates are the papers' text (Migician Appendix D.2, MIRG-RL Sec. 2.2); keeping them
out of the code lets a user adapt them to a new domain (`--prompt-dir`) without touching Python.
Placeholders are `{name}`, filled by plain replacement (the templates' own braces and parentheses,
e.g. "(x1,y1),(x2,y2)", stay as they are).
"""

from __future__ import annotations

import os
from pathlib import Path

PROMPT_DIR = Path(__file__).resolve().parent / "prompts"
NAMES = ("caption", "refine", "qa_template1", "qa_template2", "cot", "mapping", "reassembly")


def load_prompts(prompt_dir: str | os.PathLike | None = None) -> dict[str, str]:
    """Every template by name; a missing file raises FileNotFoundError naming it."""
    folder = Path(prompt_dir) if prompt_dir else PROMPT_DIR
    out = {}
    for name in NAMES:
        path = folder / f"{name}.txt"
        if not path.is_file():
            raise FileNotFoundError(f"prompt template {path} not found")
        out[name] = path.read_text(encoding="utf-8").strip()
    return out


def fill(template: str, **values) -> str:
    for key, value in values.items():
        template = template.replace("{" + key + "}", str(value))
    return template
