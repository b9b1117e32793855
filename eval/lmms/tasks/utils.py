"""lmms-eval hooks of the MIG-Bench task (mig_bench.yaml): prompts and scoring from this project.

Why here and not a copy: the prompt suffix, the answer parse and the aggregation are the ones
`python -m eval` uses (eval.prompts, eval.scoring, the MIG-Bench Benchmark), so a model scored in
lmms-eval gets the numbers `eval score` gives on the same responses. Each per-sample result keeps
what `eval score` needs (index, task, response, answer), so lmms-eval's sample log converts back
into a predictions.jsonl.
"""

from __future__ import annotations

from eval import prompts, scoring
from eval.benchmarks import get_benchmark

METRICS = ("mig_acc_0.5", "mig_acc_0.3", "mig_acc_0.7", "mig_miou")


def mig_doc_to_visual(doc):
    from eval.images import load_image

    return [load_image(p).image for p in doc["image_paths"]]


def mig_doc_to_text(doc, lmms_eval_specific_kwargs=None):
    kw = lmms_eval_specific_kwargs or {}
    suffix = prompts.suffix_text(kw.get("format_suffix", "script"))
    return prompts.with_suffix(
        doc["question"], suffix, doc.get("need_format", True), kw.get("format_when", "always")
    )


def mig_doc_to_target(doc):
    return doc["answer"]


def mig_process_results(doc, results):
    response = results[0] if results else ""
    answer_format = doc.get("answer_format", "official")
    scored = scoring.score_response(response, doc["answer"], answer_format=answer_format)
    item = {
        "index": doc["index"],
        "task": doc["task"],
        "images": doc["images"],
        "response": response,
        "answer": doc["answer"],
        "target_image": doc.get("target_image"),
        "n_images": len(doc["images"]),
        "iou": scored["iou"],
    }
    return dict.fromkeys(METRICS, item)


def _average(items, key: str) -> float:
    return get_benchmark("mig-bench").aggregate(items)["average"][key]


def mig_acc_05(items):
    return _average(items, "acc@0.5")


def mig_acc_03(items):
    return _average(items, "acc@0.3")


def mig_acc_07(items):
    return _average(items, "acc@0.7")


def mig_miou(items):
    return _average(items, "miou")
