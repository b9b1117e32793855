"""Per family (Qwen2.5-VL, Qwen3-VL): data converted with the family's --box-format trains a tiny model of
that family through `make stage1 BASE_MODEL=...` (the real `llamafactory-cli train` and recipe), the
family read from the checkpoint's config.json alone; and the converter's pixel boxes are those of the
image exactly as LLaMA-Factory's own plugin and the checkpoint's processor resize it. (Qwen2-VL is
covered by tests/test_recipes.py.)
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

import families
from converters.__main__ import main as convert_main
from tests.conftest import REPO

SIZES = [(300, 200), (112, 84)]  # two sizes: each box's image must be known (the text names it)


def _data_root(root: Path, n: int = 16) -> Path:
    """MGrounding-style records: a red square in one quadrant of the second image."""
    folder = root / "MGrounding-630k" / "imgs"
    folder.mkdir(parents=True)
    records = []
    for i in range(n):
        cell = i % 4
        paths = []
        for j, (w, h) in enumerate(SIZES):
            img = Image.new("RGB", (w, h), "white")
            if j == 1:
                x, y = (cell % 2) * w // 2, (cell // 2) * h // 2
                ImageDraw.Draw(img).rectangle([x, y, x + w // 2 - 1, y + h // 2 - 1], fill="red")
            img.save(folder / f"{i}_{j}.png")
            paths.append(f"./MGrounding-630k/imgs/{i}_{j}.png")
        x1, y1 = (cell % 2) * 500, (cell // 2) * 500
        question = "<image>\n<image>\nFind the red square in the second image. Format:<|box_start|>(x1,y1),(x2,y2)<|box_end|>."
        answer = f"<|object_ref_start|>the red square<|object_ref_end|><|box_start|>({x1},{y1}),({x1 + 500},{y1 + 500})<|box_end|>"
        records.append(
            {
                "id": f"r{i}",
                "images": paths,
                "conversations": [{"from": "human", "value": question}, {"from": "gpt", "value": answer}],
            }
        )
    (root / "grid.json").write_text(json.dumps(records))
    return root


def _convert(root: Path, data: Path, family: str, model: Path) -> list[dict]:
    data.mkdir()
    out = data / "fam.json"
    code = convert_main(
        [
            "mgrounding",
            "--input",
            str(root / "grid.json"),
            "--image-root",
            str(root),
            "--output",
            str(out),
            "--box-format",
            family,
            "--base-model",
            str(model),
        ]
    )
    assert code == 0
    entry = {
        "file_name": "fam.json",
        "formatting": "sharegpt",
        "columns": {"messages": "conversations", "images": "images"},
        "tags": {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt"},
    }
    (data / "dataset_info.json").write_text(json.dumps({"fam": entry}))
    return json.loads(out.read_text())


def _lf_resized(model: Path, family: str, path: str) -> tuple[int, int]:
    """(w, h) of an image after LLaMA-Factory's plugin and the checkpoint's own processor."""
    from llamafactory.data.template import TEMPLATES
    from transformers import AutoProcessor

    fam = families.get_family(family)
    plugin = TEMPLATES[fam.template].mm_plugin
    processor = AutoProcessor.from_pretrained(model)
    images = plugin._regularize_images(
        [path], image_max_pixels=fam.image_max_pixels, image_min_pixels=fam.image_min_pixels
    )["images"]
    _, gh, gw = processor.image_processor(images=images, return_tensors="pt")["image_grid_thw"][0].tolist()
    return gw * fam.patch_size, gh * fam.patch_size


def _answer_box(text: str, fam) -> list:
    """The one box of a converted answer, read back by the family's own parser (with its label)."""
    parsed = fam.parse_answer(text)
    assert parsed is not None and parsed.n_boxes == 1 and parsed.label == "the red square", text
    return list(parsed.box)


@pytest.mark.slow
@pytest.mark.train
@pytest.mark.parametrize("family", ["qwen2.5-vl", "qwen3-vl", "qwen3.5", "internvl"])
def test_family_trains_through_make_on_its_converted_data(family, tmp_path, tiny_family):
    model = tiny_family(family)
    data = tmp_path / "data"
    records = _convert(_data_root(tmp_path / "root"), data, family, model)
    fam = families.get_family(family)
    assert len(records) == 16
    for i, record in enumerate(records):
        question, answer = (t["value"] for t in record["conversations"])
        assert question.endswith("second image." + fam.grounding_suffix)
        cell = i % 4
        grid = [(cell % 2) * 500, (cell // 2) * 500, (cell % 2) * 500 + 500, (cell // 2) * 500 + 500]
        if fam.box_convention == families.GRID1000:
            assert _answer_box(answer, fam) == grid
        else:  # pixels of the second image as LLaMA-Factory + this processor feed it
            w, h = _lf_resized(model, family, record["images"][1])
            expected = [math.floor(v * s / 1000 + 0.5) for v, s in zip(grid, (w, h, w, h), strict=True)]
            assert _answer_box(answer, fam) == expected, (w, h)
            if i == 0:  # 112x84 under the tiny processor's 3136..50176: 112x84 stays (multiples of 28)
                assert (w, h) == (112, 84)

    out = tmp_path / "stage1"
    train_args = {
        "dataset": "fam",
        "tokenized_path": "null",
        "cutoff_len": 1024,
        "preprocessing_num_workers": 1,
        "dataloader_num_workers": 0,
        "per_device_train_batch_size": 4,
        "gradient_accumulation_steps": 1,
        "learning_rate": "1e-3",
        "freeze_vision_tower": "false",
        "max_steps": 4,
        "logging_steps": 1,
        "save_steps": 100,
        "report_to": "none",
        # InternVL tiles each image into up to 13 x 256 tokens (crop_to_patches, the family's override);
        # on this CPU the chain is checked with one tile per image, which the command line may ask for
        **({"crop_to_patches": "false"} if family == "internvl" else {}),
    }
    cmd = [
        "make",
        "stage1",
        "DEVICE=cpu",
        f"BASE_MODEL={model}",  # no FAMILY=: read from the tiny checkpoint's config.json
        f"STAGE1_OUT={out}",
        f"DATA_OUT={data}",
        "TRAIN_ARGS=" + " ".join(f"{k}={v}" for k, v in train_args.items()),
    ]
    made = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1500)
    log = made.stdout + made.stderr
    assert made.returncode == 0, log[-6000:]
    template = fam.training_template(model)[0]  # the tiny Qwen3.5 ships a thinking chat template
    assert f"{fam.display} base model (template {template}" in log
    if family == "qwen3-vl":  # the recipe's template and budget are overridden for this family only
        assert "overrides: template=qwen3_vl_nothink image_max_pixels=524288 image_min_pixels=4096" in log
    # LLaMA-Factory prints its first tokenized example: qwen2_vl adds a default system prompt,
    # qwen3_vl_nothink (like the real Qwen3-VL template) has none, so this shows which template trained.
    assert "training example" in log
    assert ("You are a helpful assistant." in log) == (template == "qwen2_vl")
    assert json.loads((out / "image_budget.json").read_text())["family"] == family  # recorded for eval
    lines = (out / "trainer_log.jsonl").read_text().splitlines()
    losses = [json.loads(x)["loss"] for x in lines if "loss" in json.loads(x)]
    assert len(losses) == 4 and all(math.isfinite(x) for x in losses)

    from safetensors.torch import load_file

    base, trained = load_file(model / "model.safetensors"), load_file(out / "model.safetensors")
    assert set(base) == set(trained)
    assert any(not base[k].equal(trained[k]) for k in base)


@pytest.mark.train
@pytest.mark.parametrize("family", ["qwen2.5-vl", "qwen3-vl"])
def test_freeze_keys_and_template_are_llamafactorys_own(family, tmp_path):
    """The families' tower keys are what LLaMA-Factory freezes for the model_type; the recipe with the
    family's overrides passes LLaMA-Factory's argument checks."""
    import yaml
    from llamafactory.hparams import get_train_args
    from llamafactory.model.model_utils.visual import COMPOSITE_MODELS

    from demo.tiny_model import build_tiny_model

    fam = families.get_family(family)
    composite = COMPOSITE_MODELS[fam.model_types[0]]
    assert set(composite.vision_model_keys) == set(fam.vision_tower_keys)
    model = build_tiny_model(tmp_path / "tiny", family=family)
    recipe = yaml.safe_load((REPO / "recipes" / "stage1.yaml").read_text())
    pairs = (kv.split("=", 1) for kv in families.recipe_overrides(recipe, fam))
    overrides = {k: yaml.safe_load(v) for k, v in pairs}  # typed as the CLI's OmegaConf would
    args = {**recipe, **overrides, "use_cpu": True, "bf16": False, "deepspeed": None}
    args.update(model_name_or_path=str(model), output_dir=str(tmp_path / "o"))
    model_args, data_args, *_ = get_train_args(args)
    assert data_args.template == fam.template
    assert model_args.image_max_pixels == fam.image_max_pixels
    proc = subprocess.run(
        [sys.executable, "-m", "families", "train-args", "recipes/stage1.yaml", "--model", "Qwen/none"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1 and "pass FAMILY=" in proc.stderr
