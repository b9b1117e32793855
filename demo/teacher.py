"""The demo's trajectory teacher: the exact traces but for one blind spot.

Why: `converters trajectories` writes every trace from the record's own annotation, so trajectory SFT on
the demo's synthetic tasks teaches everything the 2-layer model can see, and GRPO is left only what it
cannot see (which of several images holds the red object): over twelve settings and seeds and six probes
of the model and data its gain never held (README, "The RL step over seeds"). Traces at scale come from a
teacher model (MIRG-RL's GPT-4o and Qwen2-VL-72B, `datagen trajectories`), and a teacher's systematic
mistakes are what SFT imitates and a reward computed against the truth can remove. The demo plays such a
teacher: in the five tasks the model can solve, a target in the bottom-right cell of the 3x3 grid is
written one cell up, in the reasoning and in the answer, in two traces of three (MISTAKE_SHARE; which ones
is fixed by the record id). The RL prompts and the bench keep the true boxes.

Why two of three and not every one: a teacher model's systematic mistake is a habit, not a rule, and the
share decides what GRPO can do about it. Greedy decoding after SFT follows the majority (the trajectory-SFT
model answers a bottom-right target one cell up), and GRPO can only reinforce an answer it samples. With
every trace moved, the true cell was almost never sampled: lr 5e-5, 3 GRPO seeds, all three kept the blind
spot (mean gain -0.17; README, "The RL step over seeds").

The default family's default (`python -m demo.run --teacher exact` trains on the exact traces). The boxes
are Qwen2-VL's 0-1000 grid text, the default family's: the other families train on the exact traces, and
`--teacher blind-spot` is refused for them.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import families
from core.atomicio import atomic_write_text

# The record types (converters/trajectories.py) of the tasks trajectory SFT already solves in the demo.
BLIND_SPOT_TYPES = frozenset({"diff_train", "free_form", "refer_train", "region_train", "gg_train"})
TRUE_BOX = "(667,667),(1000,1000)"  # the bottom-right cell
TAUGHT_BOX = "(667,333),(1000,667)"  # the cell above it
MISTAKE_SHARE = (2, 3)  # the teacher moves the target in 2 of every 3 such traces


def share() -> str:
    """The share of mistaken traces as a demo tree records it ("2/3")."""
    return "{}/{}".format(*MISTAKE_SHARE)


def mistaken(record_id: str) -> bool:
    """Whether the teacher gets this trace wrong: a stable hash of its id, so reruns and orders agree."""
    taken, out_of = MISTAKE_SHARE
    return zlib.crc32(record_id.encode("utf-8")) % out_of < taken


def applies_to(family_name: str) -> bool:
    """The blind spot is written in Qwen2-VL's grid text, which only the default family trains on."""
    return family_name == families.DEFAULT_FAMILY


def with_blind_spot(records: list[dict]) -> tuple[list[dict], int]:
    """The records with the teacher's mistake written in (new dicts; the input is left as it was), and how
    many traces it changed."""
    out, changed = [], 0
    for record in records:
        turns = record.get("conversations") or []
        answer = turns[-1]["value"] if turns else ""
        if record.get("type") in BLIND_SPOT_TYPES and TRUE_BOX in answer and mistaken(str(record.get("id"))):
            turns = [*turns[:-1], {**turns[-1], "value": answer.replace(TRUE_BOX, TAUGHT_BOX)}]
            record = {**record, "conversations": turns}
            changed += 1
        out.append(record)
    return out, changed


def write_teacher_set(exact: Path, out: Path) -> int:
    """`out`: the trajectory set of `exact` as the blind teacher writes it (atomically; rewritten only when
    its text would change, so a rerun leaves it, and its time, as they were). Returns the traces changed."""
    records, changed = with_blind_spot(json.loads(exact.read_text(encoding="utf-8")))
    text = json.dumps(records, ensure_ascii=False)
    if not out.is_file() or out.read_text(encoding="utf-8") != text:
        atomic_write_text(out, text)
    return changed
