"""`python -m families sizes` (issue 21): for every family, labels, SFT (LLaMA-Factory's own plugin), GRPO
(rl.data with the processor TRL calls), eval-vllm (vLLM's multi-modal processor) and eval-hf give the same
canvas, on images from 50x40 to 4000x3000 with aspect ratios up to 1:7.

The tiny checkpoints' processors are given the released processors' pixel range, so the canvases are the
real ones (a 1920x1080 image is 840x476 for Qwen2.5-VL under 401408); one test per family runs the whole
chain of stages in one `families sizes` call.
"""

from __future__ import annotations

import json
import shutil

import pytest
from PIL import Image

import families
from tests.conftest import run_main

SIZES = [(50, 40), (1024, 768), (1920, 1080), (4000, 3000), (300, 2100), (2100, 300), (333, 777)]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("sizes-images")
    paths = []
    for w, h in SIZES:
        path = root / f"{w}x{h}.png"
        Image.new("RGB", (w, h), (w % 256, h % 256, 90)).save(path)
        paths.append(str(path))
    return paths


def released_range_copy(model, fam, dest):
    """The tiny checkpoint with the released processor's pixel range (processor_config.json)."""
    shutil.copytree(model, dest)
    path = dest / "processor_config.json"
    config = json.loads(path.read_text())
    ip = config["image_processor"]
    if "height" in ip.get("size", {}):  # InternVL's tiles: a tile size, no pixel range
        return dest
    ip["size"] = {"shortest_edge": fam.processor_min_pixels, "longest_edge": fam.processor_max_pixels}
    for key in ("min_pixels", "max_pixels"):
        ip.pop(key, None)
    path.write_text(json.dumps(config, indent=2))
    return dest


@pytest.mark.vllm
@pytest.mark.parametrize("name", families.FAMILY_CHOICES)
def test_every_stage_feeds_the_same_canvas(name, tiny_family, images, tmp_path):
    fam = families.get_family(name)
    model = released_range_copy(tiny_family(name), fam, tmp_path / "model")
    proc = run_main("families", ["sizes", "--model", str(model), "--image", *images, "--json"])
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["family"] == name and not report["problems"]
    assert report["budget"]["image_max_pixels"] == fam.image_max_pixels
    assert len(report["images"]) == len(SIZES)
    for row in report["images"]:
        stages = {stage: tuple(row[stage]) for stage in ("sft", "grpo", "eval-vllm", "eval-hf")}
        assert len(set(stages.values())) == 1, (row["path"], stages)  # InternVL's views also hold its tiles
        assert stages["sft"][:2] == tuple(row["labels"]), (row["path"], row["labels"], stages)
    if name == "qwen2.5-vl":  # issue 21's examples, as training feeds them
        by_name = {row["path"].rsplit("/", 1)[-1]: tuple(row["labels"]) for row in report["images"]}
        assert by_name["1024x768.png"] == (728, 560) and by_name["1920x1080.png"] == (840, 476)


@pytest.mark.vllm
def test_sizes_names_unreadable_images_and_exits_1(tiny_family, images, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    proc = run_main(
        "families", ["sizes", "--model", str(tiny_family("qwen2-vl")), "--image", images[0], str(bad)]
    )
    assert proc.returncode == 1
    assert "bad.png: cannot read the image" in proc.stdout
