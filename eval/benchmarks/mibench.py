"""MIBench (Liu et al. 2024, arXiv 2407.15272), Migician Table 2's third column: multiple-choice accuracy.

Why our own loader: MIBench is in neither lmms-eval nor VLMEvalKit. It reads the published files
(huggingface.co/datasets/StarBottle/MIBench): `multi_image_instruction.json` (MII) and
`multimodal_knowledge_seeking.json` (MKS), lists of records {`task`, `image`: [paths under the root
where image.zip is unpacked], `question`, `options`: [texts], `answer`: the right option's text}.
These are the nine sub-tasks Migician's eval script scores; the in-context-learning file
(`multimodal_in_context_learning.json`) is another protocol (demonstrations in the prompt) and is
not part of Table 2's number.

The prompt is Migician's script's for Qwen2-VL: the images, then the question followed directly by
"Please only strictly answer from the choice list: " and the options joined by " | ". Scoring:
eval/choice.py (the answer's own text first, as that script counts it). The headline is the
unweighted mean over the nine sub-tasks, as that script computes it.
"""

from __future__ import annotations

from eval.benchmark import Benchmark, Task
from eval.benchmarks import table2
from eval.benchmarks.choice_data import ChoiceRecord, first_existing, make_choice_loader
from eval.choice import normalize

FILES = ("multi_image_instruction.json", "multimodal_knowledge_seeking.json")
INSTRUCTION = "Please only strictly answer from the choice list: "
TASKS = (
    Task("general_comparison", "GC", "MII"),
    Task("subtle_difference", "SD", "MII"),
    Task("visual_referring", "VR", "MII"),
    Task("temporal_reasoning", "TR", "MII"),
    Task("logical_reasoning", "LR", "MII"),
    Task("fine_grained_visual_recognition", "FVR", "MKS"),
    Task("text_rich_images", "TRI", "MKS"),
    Task("vision_linked_textual_knowledge", "VTK", "MKS"),
    Task("text_linked_visual_knowledge", "TVK", "MKS"),
)


def read_record(raw: dict) -> ChoiceRecord:
    options, answer, question = raw.get("options"), raw.get("answer"), raw.get("question")
    if not isinstance(question, str) or not question.strip():
        raise ValueError("`question` is not a non-empty string")
    if not isinstance(options, list) or not all(isinstance(o, str) for o in options):
        raise ValueError("`options` is not a list of strings")
    if not isinstance(answer, str):
        raise ValueError("`answer` is not a string")
    matches = [k for k, o in enumerate(options) if normalize(o) == normalize(answer)]
    if len(matches) != 1:
        what = "none" if not matches else f"{len(matches)}"
        raise ValueError(f"`answer` {answer!r:.60} matches {what} of its options")
    images = raw.get("image")
    return ChoiceRecord(
        task=raw["task"],
        images=images if isinstance(images, list) else [],
        question=question + INSTRUCTION + " | ".join(options),
        options=options,
        correct=matches[0],
    )


BENCHMARK = Benchmark(
    name="mibench",
    title="MIBench",
    tasks=TASKS,
    groups=("MII", "MKS"),
    load=make_choice_loader(
        FILES,
        read_record,
        first_existing,
        tuple(t.name for t in TASKS),
        open_tasks=False,
        layout="the MIBench release (multi_image_instruction.json, multimodal_knowledge_seeking.json and "
        "the unpacked image.zip, whose paths the records give)",
    ),
    target_image=lambda inst: None,
    references=table2.column_references("mibench"),
    reference_table="the paper's Table 2 (MIBench column)",
    default_suffix="none",
    data_kind="root",
    kind="choice",
    letters=False,
    notes=(
        "MIBench: multiple-choice accuracy, unweighted mean over the MII and MKS sub-tasks (Migician's "
        "eval script); prompt: question + 'Please only strictly answer from the choice list: ' + "
        "options joined by ' | '; an answer names an option by its text (eval/choice.py)",
    ),
)
