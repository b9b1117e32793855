"""`--answer-style`: how `converters trajectories` writes its answers, one table.

Why a table: MIRG-RL's `[N-M]` trajectories and MG-Thinker's JSON image-id answers are two entries of
one interface (trajectories.AnswerStyle); a further style is one module plus one line here.
"""

from __future__ import annotations

from . import mgthinker
from .trajectories import MIRG, AnswerStyle

ANSWER_STYLES: dict[str, AnswerStyle] = {MIRG.name: MIRG, mgthinker.STYLE.name: mgthinker.STYLE}
DEFAULT_STYLE = MIRG.name
