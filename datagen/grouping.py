"""Image groups for free-form QA: random, shared object class, or CLIP adaptive similarity.

Why three: Migician (Appendix D.2) mixes random groups, groups of images sharing an object (an area
threshold keeps the shared object prominent; classes that co-occur with almost everything, e.g.
dining table, are excluded as in D.1) and Algorithm 1's CLIP groups of semantically similar images.
Every method uses each image at most once, gives groups of `min_size`..`max_size` (4-6: Algorithm 1's
seed image plus 3-5 drawn), and is reproducible from its seed. Images that cannot complete a group
are returned as leftovers, never silently dropped.
"""

from __future__ import annotations

import functools
import logging
import math
from collections import Counter
from random import Random

from .detections import DetImage

log = logging.getLogger(__name__)

# D.1's examples of classes that "often co-occur with other objects".
DEFAULT_EXCLUDED = ("keyboard", "knife", "couch", "dining table")
MIN_SIZE, MAX_SIZE = 4, 6


def _check_sizes(min_size: int, max_size: int) -> None:
    if not 2 <= min_size <= max_size:
        raise ValueError(f"group sizes must satisfy 2 <= min <= max (got {min_size}-{max_size})")


@functools.cache
def _splits(n: int, min_size: int, max_size: int) -> bool:
    """Whether n images split exactly into groups of min_size..max_size (4-6: all n but 1, 2, 3, 7)."""
    return n == 0 or any(_splits(n - s, min_size, max_size) for s in range(min_size, min(n, max_size) + 1))


def _size(rng: Random, remaining: int, min_size: int, max_size: int) -> int | None:
    """A group size for a pool of `remaining`: one whose remainder still splits exactly, when there is one."""
    if remaining < min_size:
        return None
    sizes = [s for s in range(min_size, max_size + 1) if s <= remaining]
    good = [s for s in sizes if _splits(remaining - s, min_size, max_size)]
    return rng.choice(good or sizes)


def chunk(indices: list[int], rng: Random, min_size: int, max_size: int) -> tuple[list[list[int]], list[int]]:
    """Cut an (already shuffled) list into groups of random allowed sizes; the rest is left over."""
    groups, pos = [], 0
    while (size := _size(rng, len(indices) - pos, min_size, max_size)) is not None:
        groups.append(indices[pos : pos + size])
        pos += size
    return groups, indices[pos:]


def random_groups(n: int, seed: int, min_size: int = MIN_SIZE, max_size: int = MAX_SIZE):
    _check_sizes(min_size, max_size)
    rng = Random(f"random|{seed}")
    order = list(range(n))
    rng.shuffle(order)
    return chunk(order, rng, min_size, max_size)


def cooccurring_classes(images: list[DetImage], share: float) -> set[str]:
    """Classes that appear together with at least `share` of all the other classes."""
    partners: dict[str, set[str]] = {}
    for img in images:
        for c in img.classes:
            partners.setdefault(c, set()).update(img.classes - {c})
    total = len(partners) - 1
    if total <= 0:
        return set()
    return {c for c, p in partners.items() if len(p) / total >= share}


def common_object_groups(
    images: list[DetImage],
    seed: int,
    min_area: float = 0.05,
    exclude: tuple[str, ...] = DEFAULT_EXCLUDED,
    cooccur_share: float = 0.5,
    min_size: int = MIN_SIZE,
    max_size: int = MAX_SIZE,
):
    """Groups of images that share one prominent class; returns (groups, leftovers, shared class per group)."""
    _check_sizes(min_size, max_size)
    rng = Random(f"common|{seed}")
    banned = {c.lower() for c in exclude} | {c.lower() for c in cooccurring_classes(images, cooccur_share)}
    by_class: dict[str, list[int]] = {}
    for i, img in enumerate(images):
        for c in sorted({o.name for o in img.objects if o.area >= min_area}):
            if c.lower() not in banned:
                by_class.setdefault(c, []).append(i)
    counts = Counter({c: len(v) for c, v in by_class.items()})
    classes = sorted(by_class, key=lambda c: (counts[c], c))  # rare classes first: they have fewest options
    used: set[int] = set()
    groups, shared = [], []
    for c in classes:
        free = [i for i in by_class[c] if i not in used]
        rng.shuffle(free)
        got, _ = chunk(free, rng, min_size, max_size)
        for g in got:
            used.update(g)
            groups.append(g)
            shared.append(c)
    leftovers = [i for i in range(len(images)) if i not in used]
    return groups, leftovers, shared


def clip_features(paths: list[str], checkpoint: str, batch_size: int = 16):
    """L2-normalised CLIP image embeddings (a torch tensor, one row per path) from a local checkpoint."""
    import torch
    from PIL import Image
    from transformers import CLIPImageProcessor, CLIPModel

    model = CLIPModel.from_pretrained(checkpoint).eval()
    processor = CLIPImageProcessor.from_pretrained(checkpoint)
    rows = []
    with torch.inference_mode():
        for start in range(0, len(paths), batch_size):
            batch = []
            for p in paths[start : start + batch_size]:
                with Image.open(p) as img:
                    batch.append(img.convert("RGB"))
            pixels = processor(images=batch, return_tensors="pt")["pixel_values"]
            out = model.get_image_features(pixel_values=pixels)
            feats = out if isinstance(out, torch.Tensor) else out.pooler_output
            rows.append(torch.nn.functional.normalize(feats.float(), dim=-1))
    return torch.cat(rows) if rows else torch.zeros((0, 1))


def clip_adaptive_groups(features, seed: int, min_size: int = MIN_SIZE, max_size: int = MAX_SIZE):
    """Algorithm 1 (CLIP Adaptive Similarity Selection) over row-normalised `features`.

    While the pool is not empty: a seed image f_i, thres ~ U(0.1, 1), the other pool images sorted by
    similarity to f_i, candidates their top floor(thres * len), r drawn from 3..5 (`min_size - 1` ..
    `max_size - 1`), r candidates sampled; f_i and those leave the pool as one group. Two choices the
    paper leaves open: when fewer than r candidates pass the threshold the r most similar are taken
    (so a small threshold still makes a full group), and r never leaves a pool too small for a group
    when another r avoids it; a pool smaller than `min_size` is returned as leftovers.
    """
    _check_sizes(min_size, max_size)
    rng = Random(f"clip|{seed}")
    sims = (features @ features.T).tolist()
    pool = list(range(len(sims)))
    groups: list[list[int]] = []
    while pool:
        size = _size(rng, len(pool), min_size, max_size)
        if size is None:
            break
        i = pool[rng.randrange(len(pool))]
        thres = rng.uniform(0.1, 1.0)
        others = sorted((j for j in pool if j != i), key=lambda j: (-sims[i][j], j))
        k = max(math.floor(thres * len(others)), size - 1)
        selected = rng.sample(others[:k], size - 1)
        group = [i, *selected]
        groups.append(group)
        taken = set(group)
        pool = [j for j in pool if j not in taken]
    return groups, pool
