"""`run` and `score`: bench -> prompts -> backend -> predictions.jsonl -> reports.

Why this shape: generation is the slow, crashable part, so it only appends
raw responses (with what scoring needs) and never aggregates; the reports are
always recomputed from the whole predictions file, so a resumed run, a
rescore with `--rescale migician` and a fresh run give identical numbers for
identical responses.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import families
from core.jsonfile import JSONFileError, read_json
from eval import answers as answer_formats  # not `answers`: score_records has a local of that name
from eval import choice, outcomes, provenance, scoring
from eval import prompts as P
from eval.benchmark import Bench, Benchmark, Instance
from eval.benchmarks import BENCHMARKS, DEFAULT_BENCHMARK, get_benchmark
from eval.predictions import COT_STEP1, OWN_FILES, PREDICTIONS, RunStore, read_jsonl
from eval.report import OUTPUT_FILES, write_reports
from families.budget import ImageBudget, eval_budget
from families.chat import PAPER_LAYOUT, TRAINING_LAYOUT, check_layout

MODES = ("direct", "cot", "mcot")
log = logging.getLogger(__name__)


@dataclass
class RunConfig:
    model: str
    bench: str  # the benchmark's data: MIG_data.json, or a data root (RefCOCO)
    output_dir: str
    benchmark: str = DEFAULT_BENCHMARK  # eval.benchmarks.BENCHMARKS name
    image_root: str | None = None
    backend: str = "vllm"
    mode: str = "direct"
    tasks: list[str] | None = None
    limit: int | None = None
    format_suffix: str | None = None  # None: the benchmark's default (MIG-Bench: the paper script's)
    format_when: str = "always"
    max_new_tokens: int | None = (
        None  # None: DEFAULT_MAX_NEW_TOKENS, or THINKING_MAX_NEW_TOKENS (family_defaults)
    )
    repetition_penalty: float | None = None  # None: the model's generation_config.json, as the paper's script
    answer_scale: str = "auto"
    coords: str | None = None  # None: the family's convention (Qwen2.5-VL resized-pixels, else grid1000)
    rescale: str = "none"
    answer_format: str | None = None  # eval.answers.ANSWER_FORMATS; None: the family's (official or json)
    family: str = "auto"  # families.FAMILY_CHOICES, or auto: the checkpoint's config.json (resolve_family)
    pixel_budget: str | None = None  # "paper", a number, or None: the checkpoint's record (families.budget)
    image_budget: ImageBudget | None = None  # pixel_budget resolved (run() sets it; None: paper protocol)
    prompt_layout: str = TRAINING_LAYOUT  # families.chat.PROMPT_LAYOUTS: training's prompt, or the paper's
    chunk_size: int = 256
    data_parallel: int = 1
    dp_rank: int | None = None  # set in data-parallel worker processes
    force: bool = False
    label: str | None = None
    processor: str | None = None  # where to read the image budget from (openai backend)
    engine: dict = field(default_factory=dict)  # backend options (dtype, device, tensor_parallel, ...)


DEFAULT_MAX_NEW_TOKENS = 128  # the paper script's
# A Thinking checkpoint (Qwen3-VL-*-Thinking) reasons before it answers: 128 tokens would cut the answer off.
THINKING_MAX_NEW_TOKENS = 2048


@dataclass(frozen=True)
class FamilyChoice:
    """The run's model family and where that came from (for run.json and results.md)."""

    family: families.Family
    source: str  # "given", "detected from DIR/config.json", or why the Qwen2-VL default applies
    thinking: Path | None = None  # the file whose chat template makes the checkpoint a Thinking one


def local_checkpoint(cfg: RunConfig) -> Path | None:
    """The local folder to read the model's files from: --processor, else --model (None: neither is one)."""
    return next((Path(p) for p in (cfg.processor, cfg.model) if p and Path(p).is_dir()), None)


def thinking_file(cfg: RunConfig, family: families.Family) -> Path | None:
    """The local checkpoint's file that makes it a Thinking one (families.training_template), else None."""
    local = local_checkpoint(cfg)
    return None if local is None else families.training_template(local, family)[1]


def resolve_family(cfg: RunConfig) -> FamilyChoice:
    """--family NAME as given; auto: the local checkpoint's config.json (families.detect_family).

    A served model (--backend openai) with no local folder (--processor or --model) is read as Qwen2-VL
    unless --family says otherwise: a server does not say what it serves. A local folder whose config.json
    is missing or names no known family is refused (UnknownFamilyError, a ValueError) rather than guessed.
    """
    if cfg.family != "auto":
        return FamilyChoice(families.get_family(cfg.family), "given")
    local = local_checkpoint(cfg)
    if local is None:
        why = "a served model" if cfg.backend == "openai" else f"{cfg.model} is not a local folder"
        log.info("model family: %s; reading it as Qwen2-VL (pass --family to say otherwise)", why)
        return FamilyChoice(families.get_family(families.DEFAULT_FAMILY), f"default ({why})")
    if not (local / "config.json").is_file():
        if cfg.backend == "openai":  # a processor folder: it need not hold the model's config
            return FamilyChoice(
                families.get_family(families.DEFAULT_FAMILY), f"default (no {local}/config.json)"
            )
        raise families.UnknownFamilyError(
            f"{local} has no config.json to detect the model family from; "
            f"pass --family ({', '.join(families.FAMILY_CHOICES)})"
        )
    return FamilyChoice(families.detect_family(local), f"detected from {local / 'config.json'}")


def family_defaults(cfg: RunConfig, family: families.Family, thinking: bool = False) -> RunConfig:
    """cfg with the family's defaults where the command line left a choice open (explicit values win):
    its format suffix (JSON families: their native request), answer format and coordinate convention,
    and the generation budget (a Thinking checkpoint's is THINKING_MAX_NEW_TOKENS)."""

    # A choice benchmark's prompt is its own protocol: no grounding request is appended to it.
    suffix = cfg.format_suffix or (
        None if get_benchmark(cfg.benchmark).is_choice else P.family_suffix(family)
    )
    answer = cfg.answer_format or (family.thinking_answer_format if thinking else family.answer_format)
    coords = cfg.coords or family.box_convention
    budget = cfg.max_new_tokens or (THINKING_MAX_NEW_TOKENS if thinking else DEFAULT_MAX_NEW_TOKENS)
    return replace(
        cfg,
        family=family.name,
        format_suffix=suffix,
        answer_format=answer,
        coords=coords,
        max_new_tokens=budget,
    )


def convention_text(family_name: str | None, coords: str, source: str | None = None) -> str:
    """results.md's statement of the convention: the family (when known), how its numbers are read, and why."""
    if family_name is None:
        return f"{coords}, {scoring.COORDS[coords]}"
    fam = families.get_family(family_name)
    where = f", {source}" if source else ""
    return f"{fam.display} ({fam.name}{where}): {coords}, {scoring.COORDS[coords]}"


class IncompleteRun(RuntimeError):
    """Some instances could not be generated this time; rerunning the command retries them."""


def model_identity(model: str, backend: str) -> dict:
    """What makes two runs 'the same model': a local checkpoint's files, or a served name."""
    path = Path(model)
    if backend == "openai" or not path.is_dir():
        return {"name": model}
    h = hashlib.sha256()
    for f in sorted(path.iterdir()):
        if f.suffix in (".safetensors", ".bin", ".pt"):
            st = f.stat()
            h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
        elif f.name in ("config.json", "generation_config.json"):
            h.update(f.name.encode() + b"\n" + f.read_bytes())
    return {"path": str(path.resolve()), "fingerprint": h.hexdigest()[:16]}


def repetition_penalty(cfg: RunConfig) -> float | None:
    """The paper's script calls generate() without sampling arguments, so the checkpoint's
    generation_config.json applies (Qwen2-VL-7B-Instruct ships repetition_penalty 1.05, and
    top_k 1, i.e. greedy). Greedy decoding is forced here; the penalty is kept the same way.
    None (openai backend, no local checkpoint): the server's own default is left alone."""
    if cfg.repetition_penalty is not None:
        return float(cfg.repetition_penalty)
    path = Path(cfg.processor or cfg.model) / "generation_config.json"
    try:
        value = json.loads(path.read_text(encoding="utf-8")).get("repetition_penalty")
    except (OSError, ValueError, AttributeError):
        return None if cfg.backend == "openai" else 1.0
    value = float(value) if isinstance(value, (int, float)) and value > 0 else 1.0
    # A plain OpenAI server may reject the (vLLM) parameter: send it only when it matters.
    return None if cfg.backend == "openai" and value == 1.0 else value


def suffix_of(cfg: RunConfig) -> str:
    """The format-suffix name the run uses: the one asked for, else the benchmark's default."""
    return cfg.format_suffix or get_benchmark(cfg.benchmark).default_suffix


def protocol_of(cfg: RunConfig, bench: Bench) -> dict:
    penalty = repetition_penalty(cfg)
    return {
        # Recorded only when not MIG-Bench, so an earlier MIG-Bench run.json (and its resume check) is unchanged.
        **({"benchmark": cfg.benchmark} if cfg.benchmark != DEFAULT_BENCHMARK else {}),
        "model": model_identity(cfg.model, cfg.backend),
        "backend": cfg.backend,
        "mode": cfg.mode,
        "format_suffix": P.suffix_text(suffix_of(cfg)),
        "format_when": cfg.format_when,
        "max_new_tokens": cfg.max_new_tokens,
        "repetition_penalty": "server default" if penalty is None else penalty,
        "dtype": cfg.engine.get("dtype", "auto"),
        "bench_sha256": bench.sha256,
        "answer_scale": bench.answer_scale,
        "image_loading": image_loading(cfg.image_budget),
        # Recorded only when not the paper's, which every run before the option had: their run.json (and
        # resume check) stay valid for --prompt-layout paper, and a training-layout rerun is refused.
        **({"prompt_layout": cfg.prompt_layout} if cfg.prompt_layout != PAPER_LAYOUT else {}),
        # Recorded only when not official, so an official run's run.json (and its resume check) is unchanged.
        **({"answer_format": cfg.answer_format} if cfg.answer_format != "official" else {}),
        # Likewise only for a family other than Qwen2-VL (which run.json's `info` names in every run, with
        # the coords: those are a scoring choice, so a rerun may change them, as before).
        **({"family": cfg.family} if cfg.family not in (None, "auto", families.DEFAULT_FAMILY) else {}),
    }


def cpu_backend(cfg: RunConfig, family: families.Family) -> str:
    """The backend to run: --backend, except vLLM on the CPU for a family its CPU build cannot run at the run's
    dtype (Family.vllm_cpu_limit), which runs on transformers instead, with a warning and run.json saying so."""
    if cfg.backend != "vllm" or family.vllm_cpu_limit is None:
        return cfg.backend
    if not _runs_on_cpu(cfg):
        return cfg.backend
    if cfg.engine.get("dtype", "auto") in family.vllm_cpu_dtypes and (
        not family.vllm_cpu_needs_amx or _has_amx()
    ):
        return cfg.backend
    log.warning(
        "%s; evaluating with --backend hf on the CPU (the GPU path stays vLLM)", family.vllm_cpu_limit
    )
    return "hf"


def _runs_on_cpu(cfg: RunConfig) -> bool:
    device = cfg.engine.get("device", "auto")
    if device != "auto":
        return device == "cpu"
    import torch

    return not torch.cuda.is_available()


def _has_amx() -> bool:
    """Whether this CPU has AMX tiles (vLLM-cpu's bf16 kernels of some families need them)."""
    import torch

    return bool(torch.cpu._is_amx_tile_supported())


def image_loading(budget: ImageBudget | None) -> str:
    """run.json's record of how images were sized (the paper protocol keeps its earlier wording, so a run
    made before budgets existed resumes as the same run)."""
    if budget is None or budget.is_paper:
        return "qwen_vl_utils.fetch_image"
    return f"families.resize.preprocess_image(image_max_pixels={budget.max_pixels}, image_min_pixels={budget.min_pixels})"


def skip_record(index: int, task: str | None, images, reason: str) -> dict:
    return {"index": index, "task": task, "images": images, "skipped": reason, "response": "", "iou": 0.0}


# ---------------------------------------------------------------- scoring of records


def score_records(
    records: list[dict],
    coords: str,
    rescale: str,
    answer_format: str = "official",
    benchmark: Benchmark | None = None,
) -> tuple[list[dict], list[str]]:
    """Re-score every record from its raw response; returns the scored records and notes."""
    notes: list[str] = []
    if benchmark is not None and benchmark.is_choice:
        return [_score_choice(r, benchmark) for r in records], notes
    answers = [r["answer"] for r in records if not r.get("skipped") and isinstance(r.get("answer"), list)]
    thousand = any(isinstance(v, (int, float)) and v > 1 for a in answers for v in a)
    if thousand:
        notes.append("answers are on the 0-1000 grid; divided by 1000")
    unconverted = 0
    out = []
    for rec in records:
        rec = dict(rec)
        if rec.get("skipped"):
            rec.update(box=None, iou=0.0, outcome="unparsed")
            out.append(rec)
            continue
        answer = [v / 1000.0 for v in rec["answer"]] if thousand else rec["answer"]
        size = None
        if coords != "grid1000":
            key = "resized_sizes" if coords == "resized-pixels" else "image_sizes"
            target = rec.get("target_image")
            sizes = rec.get(key) or []
            if isinstance(target, int) and 0 <= target < len(sizes):
                size = sizes[target]
            elif answer_formats.parse_answer(rec.get("response"), answer_format) is not None:
                unconverted += 1
        rec.update(
            scoring.score_response(
                rec.get("response"), answer, coords, size, rescale, answer_format, rec.get("target_image")
            )
        )
        rec["answer"] = answer
        rec["outcome"] = outcomes.classify(rec, answer_format)
        out.append(rec)
    if unconverted:
        notes.append(
            f"{unconverted} answer(s) had a box but no known target-image size for coords={coords}; "
            "scored as misses"
        )
    return out, notes


def _score_choice(rec: dict, benchmark: Benchmark) -> dict:
    """A choice record re-read from its response (a skip: unanswered, a miss)."""
    rec = dict(rec)
    if rec.get("skipped"):
        rec.update(picked=None, hit=False)
    else:
        rec.update(choice.score(rec.get("response"), rec["options"], rec["correct"], benchmark.letters))
    return rec


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _one_line_per_instance(lines: list[tuple[int, dict]], notes: list[str]) -> list[dict]:
    """The line that counts for each instance: the last one (a retried skip is superseded).

    An instance is its `index` (its position in MIG_data.json, unique across tasks, as in
    eval/bench.py), so two lines with one index and different tasks cannot come from one
    run of one bench: refused, naming both lines, rather than one being dropped unseen.
    """
    by_index: dict = {}
    for lineno, rec in lines:
        idx = rec.get("index")
        key = idx if isinstance(idx, int) and not isinstance(idx, bool) else f"line{lineno}"
        if key in by_index:
            old_line, old = by_index[key]
            if None not in (old.get("task"), rec.get("task")) and old.get("task") != rec.get("task"):
                raise ValueError(
                    f"predictions line {old_line} (task {old.get('task')!r}) and line {lineno} "
                    f"(task {rec.get('task')!r}) both give instance {idx}; an index names one instance "
                    "of one bench, so this file mixes runs: score them separately"
                )
            if not old.get("skipped"):
                notes.append(f"line {lineno} replaces line {old_line} for instance {idx}")
        by_index[key] = (lineno, rec)
    return [rec for _, rec in by_index.values()]


def _validate_prediction(
    lineno: int, rec: dict, names: tuple[str, ...] | None = None, benchmark: Benchmark | None = None
) -> str | None:
    """Why one predictions line cannot be scored (None: fine); names: the benchmark's tasks (MIG-Bench's)."""
    names = names if names is not None else get_benchmark().task_names
    task = rec.get("task")
    known = task in names or (benchmark is not None and benchmark.open_tasks and isinstance(task, str))
    if rec.get("skipped"):
        return None if known or task is None else f"line {lineno}: unknown task"
    if not known:
        return f"line {lineno}: unknown task {task!r}"
    if benchmark is not None and benchmark.is_choice:
        from eval.benchmarks.choice_data import check_choice

        why = check_choice(rec.get("options"), rec.get("correct"))
        if why or not isinstance(rec.get("response", ""), str):
            return f"line {lineno}: {why or '`response` must be a string'}"
        return None
    ans = rec.get("answer")
    if not (isinstance(ans, list) and len(ans) == 4 and all(_finite(v) for v in ans)):
        return f"line {lineno}: `answer` must be 4 numbers (finite), got {ans!r:.120}"
    if not isinstance(rec.get("response", ""), str):
        return f"line {lineno}: `response` must be a string"
    return None


def read_predictions(predictions, benchmark: Benchmark) -> tuple[list[dict], list[str]]:
    """The usable lines of a predictions file, one per instance (the last), and notes on the others.

    Raises ValueError when none is usable (`eval score`, `eval view` and `eval diff` read files alike)."""
    raw, problems = read_jsonl(Path(predictions), line_numbers=True)
    records, notes = [], list(problems)
    for lineno, rec in raw:
        bad = _validate_prediction(lineno, rec, benchmark.task_names, benchmark)
        if bad:
            notes.append(f"ignored {bad}")
        else:
            records.append((lineno, rec))
    records = _one_line_per_instance(records, notes)
    if not records:
        raise ValueError(f"{predictions} holds no usable prediction ({'; '.join(notes[:3])})")
    return records, notes


def report(
    out_dir,
    records: list[dict],
    context: dict,
    coords: str,
    rescale: str,
    answer_format: str = "official",
    benchmark: Benchmark | None = None,
) -> dict:
    """Score records and write all report files; returns metrics (plus per-task answer statistics)."""
    benchmark = benchmark or get_benchmark()
    names = benchmark.task_names
    scored, notes = score_records(records, coords, rescale, answer_format, benchmark)
    skipped = [
        {"index": r.get("index"), "task": r.get("task"), "reason": r["skipped"]}
        for r in scored
        if r.get("skipped")
    ]
    if benchmark.is_choice:  # no boxes: no coords, rescale or answer statistics
        mine = [r for r in scored if r.get("task") in names or (benchmark.open_tasks and r.get("task"))]
        metrics = benchmark.aggregate(mine)
        context = dict(context, skipped=skipped, notes=list(context.get("notes", [])) + notes)
        write_reports(out_dir, metrics, context, benchmark)
        return dict(metrics, benchmark=benchmark.name)
    metrics = benchmark.aggregate(r for r in scored if r.get("task") in names)
    stats, stat_notes = answer_formats.answer_stats(
        (r for r in scored if r.get("task") in names), answer_format
    )
    for task, extra in stats.items():  # appended after the paper's keys, which stay as they are
        metrics["tasks"][task].update(extra)
    for task, extra in outcomes.counts(r for r in scored if r.get("task") in names).items():
        metrics["tasks"][task]["outcomes"] = extra
    context = dict(
        context,
        coords=coords,
        rescale=rescale,
        answer_format=answer_format,
        skipped=skipped,
        notes=list(context.get("notes", [])) + notes + stat_notes,
    )
    write_reports(out_dir, metrics, context, benchmark)
    return metrics if benchmark.name == DEFAULT_BENCHMARK else dict(metrics, benchmark=benchmark.name)


def _run_record(predictions) -> dict | None:
    """The run.json beside a predictions file (None: there is none); ValueError naming it when it is
    there but unreadable (then its protocol is unknown, and scoring with defaults could misread it)."""
    path = Path(predictions).parent / "run.json"
    if not os.path.lexists(path):
        return None
    try:
        return read_json(path, dict, "a run record")
    except JSONFileError as err:
        raise ValueError(f"{err}; move it away to score with the defaults") from None


def recorded_protocol(predictions) -> dict | None:
    """The protocol the run.json beside a predictions file records (None: no run.json)."""
    protocol = (_run_record(predictions) or {}).get("protocol")
    return protocol if isinstance(protocol, dict) else None


def recorded_answer_format(predictions) -> str | None:
    """The answer format the run.json beside a predictions file records (None: no run.json)."""
    protocol = recorded_protocol(predictions)
    return None if protocol is None else protocol.get("answer_format", "official")


def recorded_coords(predictions, family_name) -> str:
    """The coords a run's run.json `info` records, else its family's convention, else grid1000."""
    info = (_run_record(predictions) or {}).get("info")
    coords = info.get("coords") if isinstance(info, dict) else None
    if coords is None and family_name is not None:
        coords = families.get_family(family_name).box_convention
    coords = coords or "grid1000"
    if not isinstance(coords, str) or coords not in scoring.COORDS:
        raise ValueError(f"{predictions}: its run.json records coords {coords!r:.80}; pass --coords")
    return coords


def score_file(
    predictions,
    out_dir,
    coords=None,
    rescale="none",
    force=False,
    label=None,
    answer_format=None,
    benchmark: str | None = None,
    family: str | None = None,
) -> dict:
    """`python -m eval score`: metrics from a predictions file alone.

    family: read the answers as that family's (its answer format and box convention) where --answer-format
    and --coords leave it open, for predictions made elsewhere (another tool's run of a Qwen2.5-VL model).

    answer_format None means official, unless the run's run.json recorded another one: then the
    call is refused rather than silently reading think-style answers the official way. The same
    holds for the benchmark: None means the one run.json records (MIG-Bench without one), and a
    different one given explicitly is refused. coords None: what run.json records (its `info`, else its
    family's convention, else grid1000); a JSON family's recorded `json` answer format is used likewise.
    """
    from core.atomicio import OutputExistsError, ensure_distinct_paths, refuse_existing

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"--output-dir {out} is a file, not a folder")
    names = OUTPUT_FILES
    ensure_distinct_paths({"--predictions": predictions} | {f"report {n}": out / n for n in names})
    for name in names:
        refuse_existing(out / name, force, what="report file")
    if not Path(predictions).is_file():
        raise FileNotFoundError(f"predictions file {predictions} does not exist")
    protocol = recorded_protocol(predictions)
    ran_on = None if protocol is None else protocol.get("benchmark", DEFAULT_BENCHMARK)
    if benchmark is not None and ran_on not in (None, benchmark):
        raise ValueError(
            f"{predictions} comes from a {ran_on} run (its run.json); it cannot be scored as {benchmark}"
        )
    if benchmark is None and ran_on is not None and ran_on not in BENCHMARKS:
        raise ValueError(
            f"{Path(predictions).parent / 'run.json'} records benchmark {str(ran_on)[:60]!r}, which is not one of "
            f"{', '.join(BENCHMARKS)}"
        )
    bench_def = get_benchmark(benchmark or ran_on)
    recorded = recorded_answer_format(predictions)
    family_name = family or (protocol or {}).get("family")  # recorded for JSON families; unknown otherwise
    if family is not None:
        fam = families.get_family(family)
        coords = coords or fam.box_convention
        answer_format = answer_format or fam.answer_format
    if coords is None:
        coords = recorded_coords(predictions, family_name)
    if answer_format is None and recorded in answer_formats.FAMILY_DEFAULT_FORMATS:
        answer_format = recorded  # what the family's run read; a plain default, not a reinterpretation
    if answer_format is None:
        if recorded not in (None, "official"):
            raise ValueError(
                f"{predictions} comes from a run made with --answer-format {recorded} (its run.json); "
                f"pass --answer-format {recorded} to score it that way, or --answer-format official "
                "to read whole responses"
            )
        answer_format = "official"
    answer_formats.check_format(answer_format)
    records, notes = read_predictions(predictions, bench_def)
    if recorded is not None and recorded != answer_format:
        notes.append(f"scored with --answer-format {answer_format}; the run recorded {recorded}")
    context = {
        "model": label or Path(predictions).resolve().parent.name,
        "predictions": str(Path(predictions).resolve()),  # absolute: `eval view` of this folder reads it
        # Only when run.json names the family: otherwise results.md states the bare --coords, as before.
        **({"convention": convention_text(family_name, coords, "from run.json")} if family_name else {}),
        "notes": notes,
    }
    return report(out, records, context, coords, rescale, answer_format, bench_def)


# ---------------------------------------------------------------- generation


def _chunks(items, size):
    for i in range(0, len(items), max(1, size)):
        yield items[i : i + size]


def _load_images(paths, budget: ImageBudget | None, family: families.Family):
    from eval.images import load_image

    return [load_image(p, budget, family) for p in paths]


class Generator:
    """Drives one backend over pending instances, appending finished lines to the store."""

    def __init__(self, cfg: RunConfig, backend, store: RunStore, rank: int | None):
        self.cfg, self.backend, self.store, self.rank = cfg, backend, store, rank
        self.benchmark = get_benchmark(cfg.benchmark)
        self.family = families.get_family(cfg.family)
        self.suffix = P.suffix_text(suffix_of(cfg))
        self.processor = getattr(backend, "processor", None)
        self.failures = 0
        if self.processor is None:
            self.processor = _processor_for_sizes(cfg.processor or cfg.model)

    def _sizes(self, loaded) -> tuple[list, list]:
        from eval.images import view_size

        originals = [list(li.original_size) for li in loaded]
        viewed = [list(view_size(self.processor, *li.image.size)) for li in loaded]
        return originals, viewed

    def _generate(self, prompts, images):
        """All prompts in one backend call; on an error, one by one so one bad prompt costs only itself."""
        try:
            return self.backend.generate(prompts, images)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as whole:  # noqa: BLE001 - backend errors vary; we retry singly and report
            from eval.backends import Generation

            gens = []
            for p, imgs in zip(prompts, images, strict=True):
                try:
                    gens.append(self.backend.generate([p], [imgs])[0])
                except (KeyboardInterrupt, SystemExit):
                    raise
                except Exception as exc:  # noqa: BLE001
                    gens.append(Generation("", error=f"generation failed: {type(exc).__name__}: {exc}"))
            if all(g.error for g in gens):
                raise RuntimeError(f"the backend failed on every prompt of a chunk: {whole}") from whole
            return gens

    def _record(self, inst: Instance, prompt, gen, sizes) -> dict:
        originals, viewed = sizes
        if self.benchmark.is_choice:
            return {
                "index": inst.index,
                "task": inst.task,
                "images": inst.images,
                "prompt": prompt.text,
                "response": gen.text,
                "options": inst.options,
                "correct": inst.correct,
                "n_images": len(inst.images),
                "image_sizes": originals,
                "prompt_tokens": gen.prompt_tokens,
                "output_tokens": gen.output_tokens,
                **choice.score(gen.text, inst.options, inst.correct, self.benchmark.letters),
            }
        rec = {
            "index": inst.index,
            "task": inst.task,
            "images": inst.images,
            "prompt": prompt.text,
            "response": gen.text,
            "answer": inst.answer,
            "n_images": len(inst.images),
            "target_image": self.benchmark.target_image(inst),
            "image_sizes": originals,
            "resized_sizes": viewed,
            "prompt_tokens": gen.prompt_tokens,
            "output_tokens": gen.output_tokens,
        }
        rec.update(
            scoring.score_response(
                gen.text,
                inst.answer,
                self.cfg.coords,
                _size_for(rec, self.cfg.coords),
                self.cfg.rescale,
                self.cfg.answer_format,
            )
        )
        rec["outcome"] = outcomes.classify(rec, self.cfg.answer_format)
        return rec

    def _bar(self, total, desc):
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit="inst", position=self.rank or 0, dynamic_ncols=True)

    def _pass(self, insts: list[Instance], desc: str, prepare, finish, name: str = PREDICTIONS) -> list[dict]:
        """One generation pass, chunk by chunk, appended to the store as it goes.

        prepare(inst) -> (prompt, image paths); finish(inst, prompt, gen, loaded) -> the record.
        An unreadable image skips its instance with a skip record in the predictions (so the
        score counts it); a failed generation is counted and left for a resumed run.
        """
        written: list[dict] = []
        with self._bar(len(insts), desc) as bar:
            for chunk in _chunks(insts, self.cfg.chunk_size):
                skips, ok, prompts, images = [], [], [], []
                for inst in chunk:
                    prompt, paths = prepare(inst)
                    try:
                        loaded = _load_images(paths, self.cfg.image_budget, self.family)
                    except Exception as exc:  # noqa: BLE001 - any unreadable image skips its instance
                        skips.append(
                            skip_record(inst.index, inst.task, inst.images, f"cannot read image: {exc}")
                        )
                        continue
                    ok.append((inst, loaded))
                    prompts.append(prompt)
                    images.append([li.image for li in loaded])
                gens = self._generate(prompts, images) if prompts else []
                lines = []
                for (inst, loaded), prompt, gen in zip(ok, prompts, gens, strict=True):
                    if gen.error:
                        self.failures += 1
                        continue
                    lines.append(finish(inst, prompt, gen, loaded))
                self.store.append(skips, rank=self.rank)  # no-op when empty, the usual case
                self.store.append(lines, name=name, rank=self.rank)
                written.extend(lines)
                bar.update(len(chunk))
        return written

    def direct(self, insts: list[Instance]) -> None:
        self._pass(
            insts,
            f"{self.benchmark.title} {self.cfg.backend}",
            lambda inst: (P.direct_prompt(inst, self.suffix, self.cfg.format_when), inst.image_paths),
            lambda inst, prompt, gen, loaded: self._record(inst, prompt, gen, self._sizes(loaded)),
        )

    def cot(self, insts: list[Instance]) -> None:
        """Two passes: step 1 (describe, all images) for all, then step 2 (ground)."""
        step1 = self.store.finished(COT_STEP1)

        def step1_record(inst, prompt, gen, loaded) -> dict:
            originals, viewed = self._sizes(loaded)
            return {
                "index": inst.index,
                "prompt": prompt.text,
                "response": gen.text,
                "image_sizes": originals,
                "resized_sizes": viewed,
            }

        todo = [i for i in insts if i.index not in step1]
        done = self._pass(
            todo,
            f"CoT step 1 ({self.cfg.backend})",
            lambda inst: (P.cot_step1_prompt(inst), inst.image_paths),
            step1_record,
            name=COT_STEP1,
        )
        step1.update({r["index"]: r for r in done})

        def step2_prompt(inst):
            prompt = P.cot_step2_prompt(inst, step1[inst.index]["response"], self.suffix, self.cfg.mode)
            if self.cfg.mode == "cot":  # step 2 sees only the image step 1 named
                return prompt, [inst.image_paths[prompt.meta["target_image"]]]
            return prompt, inst.image_paths

        def step2_record(inst, prompt, gen, loaded) -> dict:
            s1 = step1[inst.index]
            rec = self._record(inst, prompt, gen, (s1["image_sizes"], s1["resized_sizes"]))
            rec["step1"] = {"prompt": s1["prompt"], "response": s1["response"]}
            rec["cot_image"] = prompt.meta["target_image"]
            return rec

        ready = [i for i in insts if i.index in step1]
        self._pass(ready, f"CoT step 2 ({self.cfg.mode}, {self.cfg.backend})", step2_prompt, step2_record)


def _size_for(rec: dict, coords: str):
    if coords == "grid1000":
        return None
    sizes = rec.get("resized_sizes" if coords == "resized-pixels" else "image_sizes") or []
    t = rec.get("target_image")
    return sizes[t] if isinstance(t, int) and 0 <= t < len(sizes) else None


def _processor_for_sizes(model: str):
    """The model's processor, to predict resized sizes (None when it cannot be loaded locally)."""
    if not Path(model).is_dir():
        return None
    try:
        from transformers import AutoProcessor

        return AutoProcessor.from_pretrained(model)
    except Exception:  # noqa: BLE001 - sizes then fall back to the qwen_vl_utils size
        return None


def _engine_options(cfg: RunConfig, bench: Bench) -> dict:
    opts = dict(cfg.engine)
    opts["family"] = families.get_family(cfg.family)
    opts["prompt_layout"] = cfg.prompt_layout
    opts["max_new_tokens"] = cfg.max_new_tokens
    opts["repetition_penalty"] = repetition_penalty(cfg)
    opts["max_images"] = bench.max_images
    return opts


def _pending(bench: Bench, finished: dict[int, dict]) -> list[Instance]:
    return [i for i in bench.instances if i.index not in finished or finished[i.index].get("skipped")]


def _spawn_workers(cfg: RunConfig, argv: list[str]) -> list[int]:
    """Data parallel: one process per rank, each on its own GPUs, writing its own shard files."""
    tp = int(cfg.engine.get("tensor_parallel", 1))
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    devices = visible.split(",") if visible else None
    if devices is None:
        try:
            import torch

            devices = [str(i) for i in range(torch.cuda.device_count())] or None
        except ImportError:
            devices = None
    procs = []
    for rank in range(cfg.data_parallel):
        env = dict(os.environ)
        if devices:
            mine = devices[rank * tp : (rank + 1) * tp]
            if len(mine) < tp:
                raise ValueError(
                    f"--data-parallel {cfg.data_parallel} x --tensor-parallel {tp} needs "
                    f"{cfg.data_parallel * tp} GPUs, {len(devices)} visible"
                )
            env["CUDA_VISIBLE_DEVICES"] = ",".join(mine)
        cmd = [sys.executable, "-m", "eval", "run", *argv, "--dp-rank", str(rank)]
        procs.append(subprocess.Popen(cmd, env=env))
    return [p.wait() for p in procs]


def run(cfg: RunConfig, argv: list[str] | None = None) -> dict | None:
    """Generate what is missing in cfg.output_dir, then write the reports (unless a DP worker)."""
    benchmark = get_benchmark(cfg.benchmark)
    picked_family = resolve_family(cfg)
    thinking = thinking_file(cfg, picked_family.family)
    if thinking is not None:
        log.info("a Thinking checkpoint (%s): answers are read after its </think>", thinking)
    cfg = family_defaults(cfg, picked_family.family, thinking is not None)
    budget = eval_budget(cfg.pixel_budget, picked_family.family, local_checkpoint(cfg))
    asked = cfg.backend
    cfg = replace(cfg, image_budget=budget, backend=cpu_backend(cfg, picked_family.family))
    switched = (
        f"--backend {asked} -> {cfg.backend}: {picked_family.family.vllm_cpu_limit}"
        if cfg.backend != asked
        else None
    )
    log.info("images: %s", budget.describe())
    if cfg.mode not in MODES:
        raise ValueError(f"unknown mode {cfg.mode!r}; choose from {MODES}")
    if cfg.mode not in benchmark.modes:
        raise ValueError(
            f"{benchmark.title} defines no {cfg.mode} prompts; its modes: {', '.join(benchmark.modes)}"
        )
    P.suffix_text(suffix_of(cfg))
    if benchmark.is_choice and suffix_of(cfg) != "none":
        raise ValueError(
            f"{benchmark.title} asks its own multiple-choice prompt; --format-suffix {suffix_of(cfg)} "
            "(a box request) does not apply to it"
        )
    answer_formats.check_format(cfg.answer_format)
    check_layout(cfg.prompt_layout)
    if cfg.coords not in scoring.COORDS or cfg.rescale not in scoring.RESCALES:
        raise ValueError(
            f"--coords must be one of {sorted(scoring.COORDS)}, --rescale one of {scoring.RESCALES}"
        )
    from core.atomicio import ensure_distinct_paths

    out = Path(cfg.output_dir)
    if benchmark.data_kind == "file":
        ensure_distinct_paths({"--bench": cfg.bench} | {f"--output-dir's {n}": out / n for n in OWN_FILES})
    bench = benchmark.load(cfg.bench, cfg.image_root, cfg.tasks, cfg.limit, cfg.answer_scale)
    protocol = protocol_of(cfg, bench)
    info = {
        "bench": str(Path(cfg.bench).resolve()),
        "image_root": str(bench.image_root),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "label": cfg.label,
        "family": cfg.family,
        "family_source": picked_family.source,
        "coords": cfg.coords,
        "convention": convention_text(cfg.family, cfg.coords, picked_family.source)
        + (" Thinking checkpoint: the answer after its </think> is read." if thinking else ""),
        **({"thinking_template": str(thinking)} if thinking else {}),
        "versions": provenance.library_versions(),
        "pixel_budget": budget.describe(),
        **({"backend_note": switched} if switched else {}),
        "processor_pixels": provenance.processor_pixels(local_checkpoint(cfg)),
    }
    store = RunStore(cfg.output_dir, protocol, info, force=cfg.force and cfg.dp_rank is None)

    if cfg.dp_rank is not None:  # a data-parallel worker: the parent prepared the folder
        if not store.check():
            raise RuntimeError(f"worker {cfg.dp_rank}: {cfg.output_dir} was not prepared by the parent run")
        pending = _pending(bench, store.finished())[cfg.dp_rank :: cfg.data_parallel]
        failures = _generate_all(cfg, bench, store, pending, rank=cfg.dp_rank) if pending else 0
        if failures:
            raise IncompleteRun(f"worker {cfg.dp_rank}: {failures} instance(s) failed; rerun to retry them")
        return None

    finished = store.open()
    # A problem instance is recorded once as a skip; an earlier finished prediction is kept.
    store.append(
        [skip_record(p.index, p.task, None, p.reason) for p in bench.problems if p.index not in finished]
    )
    pending = _pending(bench, finished)
    failures = 0
    if pending:
        log.info(
            "%d of %d instance(s) to generate (%d already in %s)",
            len(pending),
            len(bench.instances),
            len(bench.instances) - len(pending),
            store.predictions_path,
        )
        if cfg.data_parallel > 1 and cfg.backend != "openai":
            codes = _spawn_workers(cfg, argv or [])
            store.merge_shards()
            failures = sum(1 for c in codes if c != 0)
        else:
            failures = _generate_all(cfg, bench, store, pending, rank=None)
    else:
        log.info("all %d instance(s) already generated; rescoring", len(bench.instances))

    finished = store.finished()
    selected = {i.index for i in bench.instances} | {p.index for p in bench.problems}
    records = [r for i, r in sorted(finished.items()) if i in selected]
    missing = len(selected) - len(records)
    context = {
        "model": cfg.label or Path(cfg.model).name or cfg.model,
        "backend": cfg.backend,
        "mode": cfg.mode,
        "format_suffix": P.suffix_text(suffix_of(cfg)),
        "bench": str(bench.path),
        "answer_scale": bench.answer_scale,
        "incomplete": missing,
        "convention": info["convention"],
        "pixel_budget": info["pixel_budget"],
        "prompt_layout": cfg.prompt_layout,
        "notes": bench.warnings + store.notes + ([switched] if switched else []),
    }
    metrics = report(cfg.output_dir, records, context, cfg.coords, cfg.rescale, cfg.answer_format, benchmark)
    if missing or failures:
        raise IncompleteRun(
            f"{missing} instance(s) are not generated yet ({failures} failure(s) this time); "
            "rerun the same command to retry them"
        )
    return metrics


def _generate_all(cfg: RunConfig, bench: Bench, store: RunStore, pending: list[Instance], rank) -> int:
    from eval.backends import make_backend

    backend = make_backend(cfg.backend, cfg.model, _engine_options(cfg, bench))
    try:
        gen = Generator(cfg, backend, store, rank)
        start = time.perf_counter()
        if cfg.mode == "direct":
            gen.direct(pending)
        else:
            gen.cot(pending)
        took = time.perf_counter() - start
        log.info("generated %d instance(s) in %.2f s", len(pending), took)
        return gen.failures
    finally:
        backend.close()
