"""Image grouping: Algorithm 1 with a tiny random CLIP, and the random and shared-class groupings.

Why: Algorithm 1's invariants are what the QA step relies on: every image in at most one group,
groups of 4-6, leftovers only when no grouping can place them, and the same groups from the same seed.
"""

from __future__ import annotations

from collections import Counter
from random import Random

import pytest

from datagen.detections import DetImage, Obj
from datagen.grouping import chunk, clip_adaptive_groups, common_object_groups, random_groups


def check_partition(groups, leftovers, n, lo=4, hi=6):
    used = [i for g in groups for i in g] + list(leftovers)
    assert sorted(used) == list(range(n)), "every image exactly once, in a group or left over"
    assert all(lo <= len(g) <= hi for g in groups)
    assert len(leftovers) < lo


@pytest.mark.parametrize("n", [0, 3, 4, 7, 8, 9, 10, 23, 100])
def test_random_groups_partition(n):
    groups, left = random_groups(n, seed=1)
    check_partition(groups, left, n)
    if n >= 8:
        assert not left  # 8 and up always split exactly into 4-6
    assert random_groups(n, seed=1) == (groups, left)


def test_chunk_avoids_a_hopeless_remainder():
    for n in range(4, 60):
        groups, left = chunk(list(range(n)), Random(n), 4, 6)
        assert not left or n == 7


def img(i, objs):
    return DetImage(str(i), f"/x/{i}.png", tuple(Obj(name, (0, 0, 10, 10), area) for name, area in objs))


def test_common_object_groups_share_a_prominent_class():
    images = [img(i, [("cat", 0.2), ("dining table", 0.5)]) for i in range(5)]
    images += [img(10 + i, [("dog", 0.3), ("cat", 0.01)]) for i in range(4)]  # cat too small here
    images += [img(20 + i, [("bird", 0.3)]) for i in range(2)]  # too few birds
    groups, left, shared = common_object_groups(images, seed=0, min_area=0.05, cooccur_share=1.1)
    assert sorted(shared) == ["cat", "dog"]
    for g, c in zip(groups, shared, strict=True):
        assert all(any(o.name == c and o.area >= 0.05 for o in images[i].objects) for i in g)
    assert len({i for g in groups for i in g}) == sum(map(len, groups))
    assert sorted(left) == [9, 10]


def test_common_object_excludes_everywhere_classes():
    # "person" co-occurs with every other class: excluded automatically; "dining table" by D.1's list.
    images = [
        img(i, [("person", 0.5), (c, 0.2), ("dining table", 0.4)]) for i, c in enumerate("abcdabcdabcd")
    ]
    groups, left, shared = common_object_groups(images, seed=0, cooccur_share=0.5)
    assert "person" not in shared and "dining table" not in shared


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(0)
    small = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1, "num_attention_heads": 2}
    config = CLIPConfig(
        text_config={**small, "vocab_size": 99},
        vision_config={**small, "image_size": 32, "patch_size": 8},
        projection_dim=16,
    )
    path = tmp_path_factory.mktemp("clip") / "tiny-clip"
    CLIPModel(config).save_pretrained(path)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        path
    )
    return path


@pytest.mark.train
def test_clip_algorithm1_invariants(tiny_clip, tmp_path):
    from PIL import Image

    from datagen.grouping import clip_features

    rng = Random(0)
    paths = []
    for i in range(23):
        p = tmp_path / f"{i}.png"
        Image.new("RGB", (40, 30), (rng.randrange(256), rng.randrange(256), rng.randrange(256))).save(p)
        paths.append(str(p))
    feats = clip_features(paths, str(tiny_clip), batch_size=8)
    assert tuple(feats.shape) == (23, 16)
    norms = feats.norm(dim=-1)
    assert all(abs(float(v) - 1) < 1e-4 for v in norms)
    groups, left = clip_adaptive_groups(feats, seed=3)
    check_partition(groups, left, 23)
    assert not left
    assert Counter(len(g) for g in groups).keys() <= {4, 5, 6}
    assert clip_adaptive_groups(clip_features(paths, str(tiny_clip)), seed=3) == (groups, left)
    assert clip_adaptive_groups(feats, seed=4) != (groups, left)


@pytest.mark.train
def test_clip_candidates_are_the_most_similar():
    import torch

    # Two clusters of 6 far apart: with thres drawn in (0.1, 1) a group never crosses clusters when
    # the threshold keeps few candidates; at least one seed shows the similarity doing its work.
    a = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0]] * 6) + 0.01 * torch.randn(6, 2), dim=-1)
    b = torch.nn.functional.normalize(torch.tensor([[0.0, 1.0]] * 6) + 0.01 * torch.randn(6, 2), dim=-1)
    feats = torch.cat([a, b])
    pure = 0
    for seed in range(20):
        groups, left = clip_adaptive_groups(feats, seed=seed)
        check_partition(groups, left, 12)
        pure += all(len({i // 6 for i in g}) == 1 for g in groups)
    assert pure >= 3


@pytest.mark.train
def test_clip_grouping_from_the_cli(tiny_clip, tmp_path):
    from datagen.__main__ import main
    from tests.test_datagen_pipeline import ff_args, make_detections
    from tests.test_datagen_server import StandIn

    det = make_detections(tmp_path / "det", n=12)
    out = tmp_path / "out"
    with StandIn() as s:
        assert main(ff_args(det, out, s.base, "--grouping", "clip", "--clip-model", str(tiny_clip))) == 0
    import json

    report = json.loads((out / "datagen_freeform.report.json").read_text())
    assert (
        report["groups"] in (2, 3)
        and report["leftover_images"] == 0
        and report["records"] == report["groups"]
    )
