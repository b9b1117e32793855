"""`python -m converters preview DATA.json`: converted training records on their images, boxes drawn.

Why: a conversion can be valid JSON and still wrong where it matters, a box in the wrong convention
(Qwen2.5-VL pixels of the resized image, Qwen3-VL's grid) or on the wrong image of a multi-image record.
The preview reads each answer's boxes back the way training will mean them: the family's own parser
(families.parse_answer) for the numbers, the converters' own placement rule (trajectories.locate, the one
the Qwen2.5-VL rewrite used; `[N-M]` ids in trajectories) for the image, the family's convention
(families.family_box_to_unit; Qwen2.5-VL: pixels of the image as LLaMA-Factory resizes it,
families.training_resized_size) for where it lands; then draws them with boxpage, the eval viewer's pages.

The family is --box-format when given, else the `box_format` the converter report beside the data records
(OUT/reports/<name>.json, `--report`, or a single family recorded for the folder), else Qwen2-VL's (said).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import families
from core.boxpage import PAGE_SIZE, Box, Card, Group, Picture, Written, write_pages
from core.grounding import OBJECT_ID_RE
from core.streaming import iter_json_records
from families import provenance

from .boxformat import DEFAULT, BoxFormat, image_size, make_box_format
from .locate import locate
from .records import Rejected
from .trajectories import NAME as TRAJ_NAME
from .trajectories import RL_NAME, SFT_NAME

log = logging.getLogger(__name__)

DEFAULT_LIMIT = 200
KINDS = ("unplaced", "no_box", "drawn")  # a card's outcome: a box it cannot place first
GRID_DIR = "sharegpt_grid"  # pipeline.GRID_DIR: the Qwen2-VL-form copies kept beside other families' data
# One flat JSON object holding a bbox_2d (what families.format_answers and the inline rewrite write).
_MAX_TEXT = families.MAX_ANSWER_CHARS


@dataclass(frozen=True)
class Placed:
    values: tuple  # the family's numbers
    image: int | None  # 1-based
    role: str  # "answer" or "question"


def report_box_format(data: Path, report: Path | None) -> tuple[BoxFormat, str]:
    """The box format the converter report records for `data`, and where that came from."""
    if data.parent.name == GRID_DIR:
        return make_box_format(DEFAULT), f"{GRID_DIR}/ holds the Qwen2-VL-form copies"
    root = data.parent.parent
    name = TRAJ_NAME if data.stem in (SFT_NAME, RL_NAME) else data.stem
    candidates = [report] if report else [root / "reports" / f"{name}.json", data.with_suffix(".report.json")]
    for path in candidates:
        if path is not None and path.is_file():
            return _from_report(path), f"recorded in {path}"
    found = families.data_box_formats(root)
    if len(found.recorded) == 1:
        ((family, paths),) = found.recorded.items()
        return _from_report(paths[0]), f"the one family recorded in {root}/reports ({family})"
    why = "several families recorded there" if found.recorded else "no report records one"
    return make_box_format(DEFAULT), f"{DEFAULT}, the default ({why}; pass --box-format)"


def _from_report(path: Path) -> BoxFormat:
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as err:
        raise ValueError(f"cannot read the converter report {path}: {err}") from None
    fmt = report.get(provenance.REPORT_KEY) if isinstance(report, dict) else None
    if fmt is None:
        return make_box_format(DEFAULT)  # converted before --box-format existed: Qwen2-VL's form
    if not isinstance(fmt, dict) or fmt.get("family") not in families.FAMILIES:
        raise ValueError(f"{path}: box_format {fmt!r:.80} names no known family")
    base = make_box_format(fmt["family"], fmt.get("image_max_pixels"), fmt.get("image_min_pixels"))
    pixels = fmt.get("processor_pixels")
    if isinstance(pixels, list) and len(pixels) == 2 and all(isinstance(v, int) and v > 0 for v in pixels):
        return BoxFormat(base.family, base.image_max_pixels, base.image_min_pixels, pixels[0], pixels[1])
    return base


def _as_tokens(text: str, fam: families.Family) -> tuple[str, list[tuple]]:
    """The text with each of the family's boxes (Family.answer_boxes) written as box tokens, so the
    converters' own rule (converters.locate) places it, and the boxes' values in the family's numbers."""
    found = fam.answer_boxes(text)
    if not found:
        return text, []
    pieces, values, pos = [], [], 0
    for start, end, box in found:
        x1, y1, x2, y2 = (round(v) for v in box)
        pieces += [text[pos:start], f"<|box_start|>({x1},{y1}),({x2},{y2})<|box_end|>"]
        values.append(box)
        pos = end
    return "".join(pieces) + text[pos:], values


def place_boxes(question: str, answer: str, n_images: int, fam: families.Family) -> list[Placed]:
    """Every box of one turn (the answer's, then the question's) with the 1-based image it is on."""
    q_text, q_values = _as_tokens(question[:_MAX_TEXT], fam)
    a_text, a_values = _as_tokens(answer[:_MAX_TEXT], fam)
    found = locate(q_text, a_text, n_images)
    ids = list(OBJECT_ID_RE.finditer(a_text))
    out = []
    for values, at in zip(a_values, found.targets, strict=False):
        image = at.image
        if image is None:  # a trajectory's "[N-M]<box>": the id just before the box names its image
            before = [m for m in ids if m.end() <= at.start]
            image = int(before[-1].group(1)) if before else None
        out.append(Placed(values, image, "answer"))
    out += [Placed(v, at.image, "question") for v, at in zip(q_values, found.context, strict=False)]
    return out


def card_of(number: int, record, fmt: BoxFormat) -> Card:
    """One record's card: its images with the boxes its turns name, its turns as text."""
    if not isinstance(record, dict):
        return Card(number, "unplaced", f"record {number}: not an object", texts=[("record", record)])
    images = record.get("images") if isinstance(record.get("images"), list) else []
    turns = record.get("conversations") if isinstance(record.get("conversations"), list) else []
    turns = [t for t in turns if isinstance(t, dict) and isinstance(t.get("value"), str)]
    boxes: dict[int, list[Box]] = {}
    problems, count = [], 0
    for k in range(0, len(turns) - 1, 2):
        for placed in place_boxes(turns[k]["value"], turns[k + 1]["value"], len(images), fmt.family):
            count += 1
            where = f"turn {k // 2 + 1} {placed.role} box {list(placed.values)}"
            if placed.image is None or not 1 <= placed.image <= len(images):
                problems.append(f"{where}: names no image of the {len(images)}")
                continue
            try:
                size = None
                if fmt.needs_sizes:
                    size = fmt.resized(image_size(str(images[placed.image - 1])))
                unit = families.family_box_to_unit(placed.values, fmt.family, size)
            except (Rejected, ValueError, TypeError) as err:
                problems.append(f"{where}: {err}")
                continue
            kind = "gt" if placed.role == "answer" else "ctx"
            boxes.setdefault(placed.image - 1, []).append(Box(kind, unit, f"turn {k // 2 + 1}"))
    pictures = [
        Picture(
            Path(p) if isinstance(p, str) and p and "\x00" not in p else None,
            f"image {j + 1}",
            boxes.get(j, []),
        )
        for j, p in enumerate(images)
    ]
    outcome = "unplaced" if problems else ("drawn" if count else "no_box")
    facts = [("boxes", count), ("images", len(images))] + [("problem", p) for p in problems[:10]]
    texts = [(str(t.get("from", "?")), t["value"]) for t in turns]
    title = f"{record.get('id', '?')} ({record.get('type', '?')})"
    return Card(number, outcome, title, pictures, texts, facts)


def write_preview(
    data,
    out_dir=None,
    limit: int | None = DEFAULT_LIMIT,
    fmt: BoxFormat | None = None,
    report: Path | None = None,
    page_size: int = PAGE_SIZE,
) -> tuple[Written, str]:
    """DATA's first `limit` records (all: None) as pages under out_dir (default DATA.preview/), grouped by
    their `type`; returns what was written and the box format used (and why)."""
    data = Path(data)
    if not data.is_file():
        raise FileNotFoundError(f"{data} does not exist")
    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be at least 1, got {limit}")
    if fmt is None:
        fmt, source = report_box_format(data, report)
    else:
        source = "given (--box-format)"
    used = f"{fmt.family.name} ({fmt.family.box_convention}; {source})"
    groups: dict[str, list[Card]] = {}
    for number, record in enumerate(iter_json_records(data, skip_bad=True)):
        if limit is not None and number >= limit:
            break
        card = card_of(number, record, fmt)
        kind = record.get("type") if isinstance(record, dict) and isinstance(record.get("type"), str) else "?"
        groups.setdefault(kind, []).append(card)
    order = {k: j for j, k in enumerate(KINDS)}
    shown = [
        Group(kind, kind, sorted(cards, key=lambda c: (order.get(c.outcome, 0), c.index)))
        for kind, cards in sorted(groups.items())
    ]
    total = sum(len(g.cards) for g in shown)
    summary = [
        f"{data}: the first {total} record(s)" + ("" if limit is None else f" (--limit {limit})"),
        f"box format: {used}",
        "green: the answer's boxes (what training teaches); blue: boxes the question names. "
        "unplaced: a box whose image the text does not say (or that cannot be read in this convention).",
    ]
    out = Path(out_dir) if out_dir else data.with_name(data.stem + ".preview")
    written = write_pages(
        out, f"preview of {data.name}", shown, KINDS, summary, page_size=page_size, kinds=("gt", "ctx")
    )
    return written, used
