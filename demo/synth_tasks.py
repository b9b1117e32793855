"""Scene generators for the demo's multi-image grounding tasks (MGrounding-630k / MIG-Bench analogues).

Why these designs: each task keeps the logic of its real counterpart (find the difference, the common
object, the tracked object, the cropped region, the referred object, the object named in text, the
object sharing a feature), and its answer is also the one red object of the target image (see
`synth_draw.TARGET`), so a 2-layer model can learn all of them from one visual rule in minutes. Each
generator returns a `Sample`: the images, a MIG-Bench-style question (no format suffix), the target
image and its box (the target's grid cell), and a dataset-card-style conversation for the scene.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from random import Random

from PIL import Image

from core.grounding import box_tokens, ref_tokens
from demo.synth_draw import (
    CELL_NAMES,
    COLORS,
    DISTRACTORS,
    N_CELLS,
    SHAPES,
    TARGET,
    Obj,
    cell_box,
    crop_cell,
    draw_scene,
    place,
    render,
    render_single,
    to_grid,
)

ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth")
NUMBERS = ("Zero", "One", "Two", "Three", "Four", "Five", "Six")
COLOR_NAMES = tuple(COLORS)


def box_text(box: tuple[int, int, int, int], image: Image.Image) -> str:
    """Qwen2-VL's box tokens on the 0-1000 grid, as MGrounding-630k writes them."""
    return box_tokens(to_grid(box, *image.size))


def in_image(image: int) -> str:
    """The card's lead-in naming the image (0-based index) that holds the answer box."""
    return f"It's in the {ORDINALS[image]} image. "


ref = ref_tokens


@dataclass
class Sample:
    """One generated scene and everything needed to write it as a training record or a bench instance."""

    task: str  # the MIG-Bench task this scene is an analogue of
    images: list[Image.Image]
    signature: tuple  # the layout without jitter: train and bench never share one
    target: int  # index of the image the answer box is relative to
    box: tuple[int, int, int, int]  # answer box (the target's grid cell) in pixels of images[target]
    question: str | None  # MIG-Bench-style question (answered by bench_answer()); None: no bench form
    info: str  # MIG-Bench's additional_info
    card: list[tuple[str, str]] = field(default_factory=list)  # dataset-card-style (human, gpt) turns
    # The bench question leaves open which image holds the target (group grounding): a training answer to
    # it names the image first, as the card's answers do, so `converters trajectories` can place its box.
    names_image: bool = False

    def bench_answer(self) -> str:
        """A training answer to the bench question: the bare box, after its image where the question leaves
        the image open."""
        lead = in_image(self.target) if self.names_image else ""
        return lead + box_text(self.box, self.images[self.target])


def _sig(scenes: list[list[Obj]], *extra) -> tuple:
    return (tuple(tuple(sorted((o.cell, o.color, o.shape) for o in s)) for s in scenes), *extra)


def _scatter(rng: Random, n: int, colors, cells, shapes=SHAPES) -> list[Obj]:
    """n objects in distinct cells drawn from `cells`, colours from `colors`."""
    chosen = rng.sample(sorted(cells), n)
    return [Obj(rng.choice(list(colors)), rng.choice(list(shapes)), c) for c in chosen]


def _cell(rng: Random, cell: int | None) -> int:
    return rng.randrange(N_CELLS) if cell is None else cell


def group_grounding(rng: Random, size: int, cell: int | None = None) -> Sample:
    """Textual reference: several images, the named object is in exactly one of them."""
    n_img = rng.randint(2, 4)
    n_targets = 2 if rng.random() < 0.3 else 1
    colors = [TARGET, *rng.sample(DISTRACTORS, n_targets - 1)]  # a second turn asks a non-red one
    others = [c for c in DISTRACTORS if c not in colors]
    targets = []
    for k, color in enumerate(colors):
        t_cell = _cell(rng, cell) if k == 0 else None
        targets.append((rng.randrange(n_img), Obj(color, rng.choice(SHAPES), t_cell)))
    scenes: list[list[Obj]] = [[] for _ in range(n_img)]
    for img, obj in targets:
        used = {o.cell for o in scenes[img]}
        if obj.cell is None or obj.cell in used:
            obj = Obj(obj.color, obj.shape, rng.choice(sorted(set(range(N_CELLS)) - used)))
        scenes[img].append(obj)
    for scene in scenes:
        free = set(range(N_CELLS)) - {o.cell for o in scene}
        scene.extend(_scatter(rng, rng.randint(1 if not scene else 0, 2), others, free))
        rng.shuffle(scene)
    images, boxes = _draw_all(rng, scenes, size)
    located = []
    for img, obj in targets:
        idx = next(i for i, o in enumerate(scenes[img]) if o.color == obj.color)
        located.append((img, scenes[img][idx], boxes[img][idx]))
    img0, obj0, box0 = located[0]
    card = []
    lead_ins = (
        "Give the bounding box of the region this sentence refers to: ",
        "Recognize the target region that this sentence refers to: ",
    )
    for k, (img, obj, box) in enumerate(located):
        card.append(
            (
                f"{lead_ins[k]}{ref('the ' + obj.name)}.",
                f"{in_image(img)}{box_text(box, images[img])}",
            )
        )
    return Sample(
        task="group_grounding",
        images=images,
        signature=_sig(scenes, img0),
        target=img0,
        box=box0,
        question=f"Find the {obj0.name} in these images and locate it. ",
        info=f"the {obj0.name}",
        card=card[:1] if rng.random() < 0.5 else card,
        names_image=True,
    )


def refer_grounding(rng: Random, size: int, cell: int | None = None) -> Sample:
    """Visual reference: the first image shows one object; find the same object in the second."""
    color, shape = TARGET, rng.choice(SHAPES)
    source = render_single(rng, color, shape, size)
    target = Obj(color, shape, _cell(rng, cell))
    others = DISTRACTORS
    scene = [target, *_scatter(rng, rng.randint(1, 3), others, set(range(N_CELLS)) - {target.cell})]
    rng.shuffle(scene)
    image, boxes = render(rng, scene, size, size)
    box = boxes[scene.index(target)]
    card = [
        (
            f"Please find {ref('the object in the first image')} in the second image and give its "
            "bounding box.",
            f"It's in the second image. {box_text(box, image)}",
        )
    ]
    return Sample(
        task="refer_grounding",
        images=[source, image],
        signature=_sig([[Obj(color, shape, -1)], scene]),
        target=1,
        box=box,
        question="Find the object shown in the first image and locate it in the second image. ",
        info=f"the {target.name}",
        card=card,
    )


def object_tracking(rng: Random, size: int, cell: int | None = None) -> Sample:
    """Visual reference in time: the object boxed in red in frame 1 moves; find it in a later frame."""
    n_img = rng.randint(3, 4)
    color, shape = TARGET, rng.choice(SHAPES)
    others = DISTRACTORS
    asked = rng.randint(1, n_img - 1)
    forced = _cell(rng, cell)
    statics = _scatter(rng, rng.randint(1, 2), others, set(range(N_CELLS)) - {forced})
    free = set(range(N_CELLS)) - {o.cell for o in statics}
    t_cells: list[int] = []
    for frame in range(n_img):
        if frame == asked:
            t_cells.append(forced)
            continue
        banned = {t_cells[-1]} if t_cells else set()
        if frame + 1 == asked:
            banned.add(forced)
        t_cells.append(rng.choice(sorted(free - banned)))
    static_geoms = place(rng, statics, size, size)
    scenes, images, boxes = [], [], []
    for frame, t_cell in enumerate(t_cells):
        moving = Obj(color, shape, t_cell)
        scene = [moving, *statics]
        geoms = [place(rng, [moving], size, size)[0], *static_geoms]
        image, frame_boxes = draw_scene(scene, geoms, size, size, marked=0 if frame == 0 else None)
        scenes.append(scene)
        images.append(image)
        boxes.append(frame_boxes[0])
    later = ", ".join(f"{box_text(boxes[f], images[f])} in the {ORDINALS[f]} image" for f in range(1, n_img))
    card = [
        (
            "The object marked with a red box in the first frame is moving. Give its bounding box in each "
            "of the following frames.",
            f"It's at {later}.",
        )
    ]
    return Sample(
        task="object_tracking",
        images=images,
        signature=_sig(scenes, asked),
        target=asked,
        box=boxes[asked],
        question=f"The object marked with a red box in the first image moves across these frames. "
        f"Locate it in the {ORDINALS[asked]} image. ",
        info=f"the {color} {shape}",
        card=card,
    )


def common_object(rng: Random, size: int, cell: int | None = None) -> Sample:
    """Similarity: one object appears in every image; ground it in the image the question names."""
    n_img = rng.randint(2, 4)
    color, shape = TARGET, rng.choice(SHAPES)
    others = DISTRACTORS
    asked = rng.randrange(n_img)
    while True:
        scenes = []
        for img in range(n_img):
            t_cell = _cell(rng, cell) if img == asked else rng.randrange(N_CELLS)
            common = Obj(color, shape, t_cell)
            scene = [common, *_scatter(rng, rng.randint(0, 2), others, set(range(N_CELLS)) - {t_cell})]
            rng.shuffle(scene)
            scenes.append(scene)
        # only the common object's colour may appear in every image, else "common" is ambiguous
        shared = set.intersection(*({o.color for o in s} for s in scenes))
        if shared == {color}:
            break
    images, boxes = _draw_all(rng, scenes, size)
    where = [boxes[i][next(k for k, o in enumerate(s) if o.color == color)] for i, s in enumerate(scenes)]
    listing = ", ".join(f"{box_text(b, images[i])} in the {ORDINALS[i]} image" for i, b in enumerate(where))
    card = [
        (
            "What object appears in all of these images? Ground it in every image.",
            f"{ref('The ' + color + ' ' + shape)} appears in all of them: {listing}.",
        )
    ]
    return Sample(
        task="common_object",
        images=images,
        signature=_sig(scenes, asked),
        target=asked,
        box=where[asked],
        question=f"These images share one object in common. Find it and locate it in the "
        f"{ORDINALS[asked]} image. ",
        info=f"the {color} {shape}",
        card=card,
    )


def diff(rng: Random, size: int, cell: int | None = None) -> Sample:
    """Static difference: the second image equals the first except one added or recoloured object."""
    t_cell = _cell(rng, cell)
    first = _scatter(rng, rng.randint(2, 4), DISTRACTORS, set(range(N_CELLS)) - {t_cell})
    geoms = place(rng, first, size, size)
    if rng.random() < 0.6:
        new = Obj(TARGET, rng.choice(SHAPES), t_cell)
        second, geoms2 = [*first, new], [*geoms, place(rng, [new], size, size)[0]]
        change = f"{ref('A ' + new.name)} has been added."
        info = f"a {new.name} was added"
    else:
        old = Obj(rng.choice(DISTRACTORS), rng.choice(SHAPES), t_cell)
        new = Obj(TARGET, old.shape, t_cell)
        g = place(rng, [old], size, size)[0]
        first, geoms = [*first, old], [*geoms, g]
        second, geoms2 = [*first[:-1], new], geoms
        change = f"{ref('The ' + old.shape)} changed color from {old.color} to {new.color}."
        info = f"the {old.shape} changed color from {old.color} to {new.color}"
    image1, _ = draw_scene(first, geoms, size, size)
    image2, boxes2 = draw_scene(second, geoms2, size, size)
    box = boxes2[-1]
    card = [
        ("What is different in the second image? Ground the difference.", f"{change} {box_text(box, image2)}")
    ]
    return Sample(
        task="diff",
        images=[image1, image2],
        signature=_sig([first, second]),
        target=1,
        box=box,
        question="Compare the two images and locate the difference in the second image. ",
        info=info,
        card=card,
    )


def region(rng: Random, size: int, cell: int | None = None) -> Sample:
    """Region locating: later images are grid cells cropped from the first; find where they came from."""
    n_crops = rng.randint(1, 2)
    crop_colors = [TARGET, *rng.sample(DISTRACTORS, n_crops - 1)]  # the asked crop shows the red one
    others = [c for c in DISTRACTORS if c not in crop_colors]
    first_cell = _cell(rng, cell)
    crop_cells = [first_cell, *rng.sample(sorted(set(range(N_CELLS)) - {first_cell}), n_crops - 1)]
    scene = [Obj(c, rng.choice(SHAPES), k) for c, k in zip(crop_colors, crop_cells, strict=True)]
    free = set(range(N_CELLS)) - set(crop_cells)
    scene.extend(_scatter(rng, rng.randint(1, 3), others, free))
    full, _ = render(rng, scene, size, size)
    crops = [crop_cell(full, k, size)[0] for k in crop_cells]
    order = list(range(n_crops))
    rng.shuffle(order)  # which later image shows which crop
    images = [full, *[crops[i] for i in order]]
    asked = 1 + order.index(0)
    box = cell_box(first_cell, size, size)
    if n_crops == 1:
        card = [
            (
                "Where in the first image is the region shown in the second image? Give its bounding box.",
                f"It's in the first image. {box_text(box, full)}",
            )
        ]
    else:
        parts = "; ".join(
            f"the {ORDINALS[1 + j]} image: {box_text(cell_box(crop_cells[order[j]], size, size), full)}"
            for j in range(n_crops)
        )
        card = [
            (
                "The second and third images are regions of the first image. Give the bounding box of each "
                "region in the first image.",
                f"In the first image, {parts}.",
            )
        ]
    return Sample(
        task="region",
        images=images,
        signature=_sig([scene], tuple(crop_cells[i] for i in order), asked),
        target=0,
        box=box,
        question=f"The {ORDINALS[asked]} image is a region cropped from the first image. Locate this region "
        "in the first image. ",
        info=f"the {CELL_NAMES[first_cell]} region",
        card=card,
    )


def reasoning(rng: Random, size: int, cell: int | None = None) -> Sample:
    """Free-form 'shared feature' grounding: the object in image 2 with the colour of image 1's object."""
    color, shape = TARGET, rng.choice(SHAPES)
    source = render_single(rng, color, shape, size)
    target = Obj(color, rng.choice([s for s in SHAPES if s != shape]), _cell(rng, cell))
    others = DISTRACTORS
    scene = [target, *_scatter(rng, rng.randint(1, 3), others, set(range(N_CELLS)) - {target.cell})]
    rng.shuffle(scene)
    image, boxes = render(rng, scene, size, size)
    box = boxes[scene.index(target)]
    card = [
        (
            f"In Image-2, which shape has the same color as the {shape} in Image-1? Give its bounding box.",
            f"The {target.name}. It is located at {box_text(box, image)}.",
        )
    ]
    return Sample(
        task="reasoning",
        images=[source, image],
        signature=_sig([[Obj(color, shape, -1)], scene], "color"),
        target=1,
        box=box,
        question="Which object in the second image has the same color as the object in the first image? "
        "Find it and locate it in the second image. ",
        info="Which object in the second image has the same color as the object in the first image?",
        card=card,
    )


def same_shape(rng: Random, size: int, cell: int | None = None) -> Sample:
    """Free-form variant: the object in image 2 with the shape (not colour) of image 1's object."""
    color, shape = rng.choice(DISTRACTORS), rng.choice(SHAPES)
    source = render_single(rng, color, shape, size)
    target = Obj(TARGET, shape, _cell(rng, cell))
    shapes = [s for s in SHAPES if s != shape]
    free = set(range(N_CELLS)) - {target.cell}
    scene = [target, *_scatter(rng, rng.randint(1, 3), DISTRACTORS, free, shapes)]
    rng.shuffle(scene)
    image, boxes = render(rng, scene, size, size)
    box = boxes[scene.index(target)]
    return Sample(
        task="reasoning",
        images=[source, image],
        signature=_sig([[Obj(color, shape, -1)], scene], "shape"),
        target=1,
        box=box,
        question="Which object in the second image has the same shape as the object in the first image? "
        "Find it and locate it in the second image. ",
        info="Which object in the second image has the same shape as the object in the first image?",
        card=[
            (
                f"Find the shape in Image-2 that has the same shape as the {color} one in Image-1.",
                f"The {target.name} in Image-2 has the same shape. It is located at {box_text(box, image)}.",
            )
        ],
    )


def color_link(rng: Random, size: int, cell: int | None = None) -> Sample:
    """Free-form, dialogue-like: link two images through a shared colour (appendix-style Q&A)."""
    n_img = rng.randint(3, 4)
    color = TARGET
    j, k = rng.sample(range(n_img), 2)
    others = DISTRACTORS
    scenes = []
    for img in range(n_img):
        scene = _scatter(rng, rng.randint(1, 2), others, set(range(N_CELLS)))
        if img in (j, k):
            free = set(range(N_CELLS)) - {o.cell for o in scene}
            t_cell = _cell(rng, cell) if img == k and cell in free else rng.choice(sorted(free))
            scene.append(Obj(color, rng.choice(SHAPES), t_cell))
        rng.shuffle(scene)
        scenes.append(scene)
    images, boxes = _draw_all(rng, scenes, size)
    src = next(o for o in scenes[j] if o.color == color)
    idx = next(i for i, o in enumerate(scenes[k]) if o.color == color)
    tgt, box = scenes[k][idx], boxes[k][idx]
    question = (
        f"In Image-{j + 1}, there is a {src.name}. Can you find a shape of the same color in Image-{k + 1}? "
        "If so, where is it located?"
    )
    answer = f"Yes. In Image-{k + 1}, the {tgt.name} has the same color. It is located at {box_text(box, images[k])}."
    return Sample(
        task="reasoning",
        images=images,
        signature=_sig(scenes, j, k),
        target=k,
        box=box,
        question=None,
        info=question,
        card=[(question, answer)],
    )


def only_shape(rng: Random, size: int, cell: int | None = None) -> Sample:
    """Free-form: a shape that occurs once across all images, plus a counting turn about a colour."""
    n_img = rng.randint(2, 4)
    shape = rng.choice(SHAPES)
    rest = [s for s in SHAPES if s != shape]
    owner = rng.randrange(n_img)
    scenes = []
    for img in range(n_img):
        scene = _scatter(rng, rng.randint(1, 2), DISTRACTORS, set(range(N_CELLS)), rest)
        if img == owner:
            free = set(range(N_CELLS)) - {o.cell for o in scene}
            t_cell = cell if cell in free else rng.choice(sorted(free))
            scene.append(Obj(TARGET, shape, t_cell))
        rng.shuffle(scene)
        scenes.append(scene)
    images, boxes = _draw_all(rng, scenes, size)
    idx = next(i for i, o in enumerate(scenes[owner]) if o.shape == shape)
    box = boxes[owner][idx]
    card = [
        (
            f"Among these images, only one contains a {shape}. Which image is it, and where is the {shape}?",
            f"It's in the {ORDINALS[owner]} image. {box_text(box, images[owner])}",
        )
    ]
    color = rng.choice(COLOR_NAMES)
    count = sum(any(o.color == color for o in s) for s in scenes)
    if rng.random() < 0.5:
        card.insert(0, (f"How many of these images contain a {color} shape?", f"{NUMBERS[count]}."))
    return Sample(
        task="reasoning",
        images=images,
        signature=_sig(scenes, "only", shape),
        target=owner,
        box=box,
        question=None,
        info=card[-1][0],
        card=card,
    )


def _draw_all(rng: Random, scenes: list[list[Obj]], size: int):
    images, boxes = [], []
    for scene in scenes:
        image, b = render(rng, scene, size, size)
        images.append(image)
        boxes.append(b)
    return images, boxes


def free_form(rng: Random, size: int, cell: int | None = None) -> Sample:
    """Stage-2 free-form mix: mostly the bench's 'reasoning' question, plus other question styles."""
    pick = rng.random()
    if pick < 0.45:
        return reasoning(rng, size, cell)
    if pick < 0.65:
        return same_shape(rng, size, cell)
    if pick < 0.85:
        return color_link(rng, size, cell)
    return only_shape(rng, size, cell)


Generator = Callable[[Random, int, "int | None"], Sample]

# MIG-Bench task -> generator; the order is the paper's column order for the tasks built here.
BENCH_TASKS: dict[str, Generator] = {
    "diff": diff,
    "common_object": common_object,
    "object_tracking": object_tracking,
    "region": region,
    "refer_grounding": refer_grounding,
    "group_grounding": group_grounding,
    "reasoning": reasoning,
}
