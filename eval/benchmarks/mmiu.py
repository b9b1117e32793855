"""MMIU (Meng et al. 2024, arXiv 2408.02718), Migician Table 2's fifth column: multiple-choice accuracy.

Why our own loader: MMIU is in neither lmms-eval nor VLMEvalKit. It reads the published list of
records (`all.json`, the release's `test.json` under another name is read too) under a root holding
the unpacked task folders: {`task`, `question`, `context` (the scenario and the lettered choices),
`options` ("A: ...\\nB: ..."), `input_image_path`: [`../MMIU-Benchmark/<task>/x.jpg` or
`./<task>/x.jpg`], `output`: the right letter}. Tasks are the data's own (52 tasks, some split by
source, e.g. `forensic_detection_blink`); a task this module does not list is kept and reported.

The prompt is Migician's script's for Qwen2-VL: the images, then "Question:\\n" + question +
"\\nSpecifically:\\n" + context. MMIU's own evaluate.py takes a lone letter and maps anything else
with gpt-4o-mini; here the mapping is eval/choice.py's deterministic one (a letter, else an option's
text), and an answer it cannot map is a miss, as MMIU's "Z" is. The headline is the unweighted mean
over the tasks present, as Migician's script computes it; metrics.json also gives the mean over all
questions (`micro`).
"""

from __future__ import annotations

from eval.benchmark import Benchmark, Task
from eval.benchmarks import table2
from eval.benchmarks.choice_data import ChoiceRecord, first_existing, make_choice_loader
from eval.choice import LETTERS, parse_options

FILES = ("all.json", "test.json")
# The release's task names (its per-task result folders), in its alphabetical order; the data decides.
_NAMES_TEXT = (
    "Egocentric_Video_QuestionAnswering Homography_estimation Icon_Question_Answering_with_Spatial_Context "
    "Image_Captioning_with_Spatial_Context Image_Spatial_Transformation_Estimation "
    "Image_text_retrieval_with_Spatial_Context Multiview_Action_Recognition Multiview_reasoning "
    "action_quality_assessment casuality_reasoning_next_qa casuality_reasoning_var emotion_recognition_expw "
    "emotion_recognition_findingemo face_retrieval forensic_detection_blink forensic_detection_forgerynet "
    "functional_correspondence_blink functional_correspondence_funk_point general_action_recognition "
    "gui_app_recognition gui_next_action_prediction handwritten_retrieval image2image_retrieval "
    "jigsaw_puzzle_solving meme_vedio_understanding mevis multiple_image_captioning next_img_prediction "
    "person_reid point_tracking ravens_progressive_matrices semantic_correspondence_blink "
    "semantic_correspondence_misc210k single_object_tracking sketch2image_retrieval spot_the_diff "
    "spot_the_similarity temporal_localization temporal_ordering text2image_retrieval textual_cloze "
    "threeD_Depth_Estimation threeD_Object_Detection threeD_Object_Tracking threeD_Pose_Estimation "
    "threeD_Scene_Reconstruction threeD_question_answering threed_cad_recognition threed_indoor_recognition "
    "vehicle_retrieval video_captioning visual_cloze visual_coherence visual_correspondence_blink "
    "visual_correspondence_scannet visual_ordering visual_quality_assessment_q_bench+ "
    "visual_quality_assessment_ve_lol_l visually_grounded_reasoning_marvl visually_grounded_reasoning_nlvr2"
)
_NAMES = tuple(_NAMES_TEXT.split())
TASKS = tuple(Task(n, n, "MMIU") for n in _NAMES)


def read_record(raw: dict) -> ChoiceRecord:
    question, context, answer = raw.get("question"), raw.get("context"), raw.get("output")
    if not isinstance(question, str) or not question.strip():
        raise ValueError("`question` is not a non-empty string")
    if not isinstance(context, str):
        raise ValueError("`context` is not a string")
    options = parse_options(raw.get("options"))
    if options is None:
        raise ValueError(
            f"`options` {raw.get('options')!r:.80} is not lettered lines 'A: ...', 'B: ...' (at most 26)"
        )
    letter = answer.strip().strip(".()").upper() if isinstance(answer, str) else ""
    if len(letter) != 1 or letter not in LETTERS:
        raise ValueError(f"`output` {answer!r:.40} is not an option letter")
    images = raw.get("input_image_path")
    return ChoiceRecord(
        task=raw["task"],
        images=images if isinstance(images, list) else [],
        question="Question:\n" + question + "\nSpecifically:\n" + context,
        options=options,
        correct=LETTERS.index(letter),
    )


BENCHMARK = Benchmark(
    name="mmiu",
    title="MMIU",
    tasks=TASKS,
    groups=(),
    load=make_choice_loader(
        FILES,
        read_record,
        first_existing,
        tuple(_NAMES),
        open_tasks=True,
        layout="the MMIU release (all.json and the unpacked task folders its input_image_path names)",
    ),
    target_image=lambda inst: None,
    references=table2.column_references("mmiu"),
    reference_table="the paper's Table 2 (MMIU column)",
    default_suffix="none",
    data_kind="root",
    kind="choice",
    letters=True,
    open_tasks=True,
    notes=(
        "MMIU: multiple-choice accuracy, unweighted mean over the tasks present (Migician's eval script; "
        "`micro` in metrics.json is over all questions); prompt: 'Question:\\n' + question + "
        "'\\nSpecifically:\\n' + context; an answer names an option by its letter or its text "
        "(eval/choice.py; MMIU's gpt-4o-mini matching is not used)",
    ),
)
