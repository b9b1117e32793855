"""Static HTML pages of images with boxes drawn over them (`eval view`, `converters preview`).

Why: a grounding score says how often a box is right, not where the wrong ones land; a user settles a
coordinate mix-up or a score that does not reproduce by looking at the boxes on their images. The pages
open from disk in any browser (no server, no external URL): thumbnails are written beside them once (PIL,
scaled down; a rerun reuses them), boxes are SVG rects over each thumbnail, and a long run is split into
pages of a few hundred instances. Every text shown (questions, model answers, data records) is untrusted:
bounded, escaped, never markup; a Content-Security-Policy lets only the page's own inline script run.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import html
import json
import logging
import os
import re
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from core.atomicio import OutputExistsError, atomic_write_text
from core.signals import deferred_signals

log = logging.getLogger(__name__)

MAX_TEXT_CHARS = 4096  # of one text shown (a model answer is 128-2048 tokens; the rest is cut, with a note)
PAGE_SIZE = 200  # instances per page
THUMB_SIDE = 256  # longest side of a thumbnail file, in pixels
DISPLAY_SIDE = 200  # longest side of an image on the page
THUMBS = "thumbs"
MANIFEST = "manifest.json"  # marks the folder as ours and maps each instance to its page
BOX_KINDS = {"gt": "ground truth", "pred": "prediction", "ctx": "a box the question names"}

# C0 controls (but tab, newline, carriage return) and DEL, shown as \xNN rather than passed to the page.
_CONTROLS = {c: f"\\x{c:02x}" for c in [*range(0, 9), 11, 12, *range(14, 32), 127]}
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class Box:
    kind: str  # the rect's class: "gt", "pred" or "ctx" (BOX_KINDS)
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 as 0-1 fractions of the image
    label: str = ""


@dataclass
class Picture:
    path: Path | None  # the image file (None: not known)
    caption: str
    boxes: list[Box] = field(default_factory=list)
    size: tuple[int, int] | None = None  # the original (w, h), when known: a missing image's shape
    target: bool = False  # framed: the image the answer belongs in


@dataclass
class Card:
    """One instance: its pictures, its texts (untrusted: shown escaped) and a few facts."""

    index: int
    outcome: str  # data-outcome, and the filter it answers to
    title: str
    pictures: list[Picture] = field(default_factory=list)
    texts: list[tuple[str, object]] = field(default_factory=list)  # (heading, text)
    facts: list[tuple[str, object]] = field(default_factory=list)  # (name, value)


@dataclass
class Group:
    """The cards of one page series (a task), in the order shown."""

    name: str
    title: str
    cards: list[Card]


@dataclass
class Written:
    index: Path
    pages: int
    cards: int
    thumbs_new: int
    thumbs_reused: int
    image_errors: int
    bytes: int


def text(value, limit: int = MAX_TEXT_CHARS) -> str:
    """Untrusted text as HTML: at most `limit` characters (then a note), lone surrogates and control
    characters as visible escapes, everything else escaped (`<`, `>`, `&`, quotes)."""
    if value is None:
        value = ""
    if not isinstance(value, str):
        value = json.dumps(value, ensure_ascii=False) if isinstance(value, (list, dict)) else str(value)
    shown = value[:limit].encode("utf-8", "backslashreplace").decode("utf-8").translate(_CONTROLS)
    out = html.escape(shown, quote=True)
    if len(value) > limit:
        out += f'<span class="cut">[{len(value) - limit:,} more characters not shown]</span>'
    return out


def make_thumbnail(source: str, dest: str, side: int) -> tuple[int, int] | str:
    """Write one thumbnail (a worker process's job): its (w, h), or why the image cannot be read.

    A thumbnail is a cache of its image: written to a temporary name and renamed (never half there
    under its name), without the fsync a user's file gets, which would double its cost."""
    from PIL import Image

    tmp = f"{dest}.{os.getpid()}.tmp"
    try:
        with Image.open(source) as im:
            im.draft("RGB", (side, side))  # JPEG: decode at a reduced scale (much faster)
            im = im.convert("RGB")
            im.thumbnail((side, side))
            im.save(tmp, format="JPEG", quality=80)
        os.replace(tmp, dest)
        return im.width, im.height
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        return f"cannot read image {source}: {type(exc).__name__}: {exc}"


class Thumbnails:
    """Scaled-down copies of the images in VIEW/thumbs, named by the source file's path, size and
    modification time: a rerun reuses them (their sizes are in the manifest), an edited image gets a new
    one. `prepare` makes the missing ones in `workers` processes, with progress in the log."""

    def __init__(self, view_dir: Path, side: int = THUMB_SIDE, known: dict | None = None):
        self.dir = Path(view_dir) / THUMBS
        self.side = side
        self.known = known or {}  # thumbnail file name -> [w, h], from the previous view's manifest
        self.done: dict[str, tuple[str, int, int] | str] = {}  # source -> (rel path, w, h) or an error
        self.new = self.reused = self.errors = 0

    def _name(self, path: Path) -> str:
        st = path.stat()
        digest = hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{self.side}".encode())
        return f"{digest.hexdigest()[:24]}.jpg"

    def prepare(self, paths, workers: int = 1) -> None:
        """Thumbnails of all these images: reused where present, the others made (in parallel)."""
        todo: list[tuple[str, str]] = []
        queued: set[str] = set()
        for path in paths:
            key = str(path)
            if path is None or key in self.done or key in queued:
                continue
            try:
                name = self._name(Path(path))
            except OSError as exc:
                self.done[key] = f"image not found: {path} ({exc.strerror or exc})"
                self.errors += 1
                continue
            size = self._size_of(name)
            if size is not None:
                self.done[key] = (f"{THUMBS}/{name}", *size)
                self.reused += 1
            else:
                todo.append((key, name))
                queued.add(key)
        if not todo:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        jobs = [(key, str(self.dir / name), self.side) for key, name in todo]
        log.info("thumbnails: %d to write (%d reused), %d process(es)", len(jobs), self.reused, workers)
        with contextlib.ExitStack() as stack:
            # Signals are taken between results (core.signals): never inside the pool's locks.
            signals = stack.enter_context(deferred_signals())
            if workers > 1 and len(jobs) > 64:
                pool = stack.enter_context(ProcessPoolExecutor(workers))
                results = pool.map(make_thumbnail, *zip(*jobs, strict=True), chunksize=32)
                stack.callback(results.close)  # on a stop, the thumbnails not yet started are dropped
            else:
                results = map(make_thumbnail, *zip(*jobs, strict=True))
            for k, ((key, name), got) in enumerate(zip(todo, results, strict=True), start=1):
                signals.check()
                if isinstance(got, str):
                    self.done[key] = got
                    self.errors += 1
                else:
                    self.done[key] = (f"{THUMBS}/{name}", *got)
                    self.new += 1
                if k % 2000 == 0 or k == len(jobs):
                    log.info("thumbnails: %d of %d written", k, len(jobs))

    def _size_of(self, name: str) -> tuple[int, int] | None:
        """(w, h) of an existing thumbnail: from the manifest, else its header; None when it is not there."""
        dest = self.dir / name
        if not dest.is_file():
            return None
        size = self.known.get(name)
        if isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size):
            return size[0], size[1]
        from PIL import Image

        try:
            with Image.open(dest) as im:
                return im.width, im.height
        except (OSError, ValueError, SyntaxError):
            return None

    def get(self, path: Path | None) -> tuple[str, int, int] | str:
        """(path relative to the view folder, width, height) of the thumbnail, or why there is none."""
        if path is None:
            return "no image path"
        if str(path) not in self.done:
            self.prepare([path])
        return self.done[str(path)]

    def sizes(self) -> dict[str, list[int]]:
        """file name -> [w, h] of the thumbnails known (the earlier view's and this one's), for the manifest."""
        used = {Path(t[0]).name: [t[1], t[2]] for t in self.done.values() if isinstance(t, tuple)}
        return {**self.known, **used}


_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:0 1.5em 3em;color:#222;background:#fafafa}
h1{font-size:1.3em}h2{font-size:1.1em}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:.2em .6em;text-align:right}th:first-child,td:first-child{text-align:left}
nav{margin:.6em 0}nav a{margin-right:1em}.filters label{margin-right:1em}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;margin:1em 0;padding:.6em .9em}
.card h3{margin:.1em 0 .5em;font-size:1em}.pics{display:flex;flex-wrap:wrap;gap:.6em}
figure{margin:0}figcaption{font-size:.85em;color:#555}
.frame{position:relative;background:#eee;border:2px solid transparent}
.target .frame{border-color:#1565c0}.frame img{display:block}
.frame svg{position:absolute;left:0;top:0;width:100%;height:100%;overflow:visible}
rect{fill:none;stroke-width:2.5;vector-effect:non-scaling-stroke}
rect.gt{stroke:#00c853}rect.pred{stroke:#d50000;stroke-dasharray:6 3}rect.ctx{stroke:#2962ff;stroke-dasharray:2 2}
.missing{display:flex;align-items:center;justify-content:center;font-size:.8em;color:#900;text-align:center}
pre{white-space:pre-wrap;word-break:break-word;background:#f3f3f3;padding:.4em;margin:.2em 0;max-height:16em;
overflow:auto}
.cut{color:#900;font-style:italic}.facts{color:#444;font-size:.9em}
.o{padding:0 .4em;border-radius:3px;color:#fff}.o-hit{background:#2e7d32}.o-miss{background:#ef6c00}
.o-wrong_image{background:#6a1b9a}.o-unparsed{background:#757575}.o-drawn{background:#2e7d32}
.o-no_image{background:#c62828}.legend rect{stroke-width:2.5}
"""

_FILTER_SCRIPT = """(function(){
var boxes=[].slice.call(document.querySelectorAll('input[data-filter]'));
function apply(){var on={},n=0,all=true;boxes.forEach(function(b){on[b.dataset.filter]=b.checked;all=all&&b.checked;});
[].forEach.call(document.querySelectorAll('article.card'),function(c){var v=!!on[c.dataset.outcome];c.hidden=!v;n+=v;});
document.getElementById('shown').textContent=n;
var h=all?'':'#only='+boxes.filter(function(b){return b.checked;}).map(function(b){return b.dataset.filter;}).join(',');
[].forEach.call(document.querySelectorAll('a.page'),function(a){a.href=a.getAttribute('href').split('#')[0]+h;});}
var m=/only=([A-Za-z_,]+)/.exec(location.hash);
if(m){var want=m[1].split(',');boxes.forEach(function(b){b.checked=want.indexOf(b.dataset.filter)>=0;});}
boxes.forEach(function(b){b.addEventListener('change',apply);});apply();})();"""

_JUMP_SCRIPT = """(function(){
var where=JSON.parse(document.getElementById('where').textContent);
function go(){var m=/^#i(\\d+)$/.exec(location.hash);if(!m)return;
if(where[m[1]]){location.replace(where[m[1]]+'#i'+m[1]);}
else{document.getElementById('jump').textContent='instance '+m[1]+' is not in this view';}}
window.addEventListener('hashchange',go);go();})();"""


def _csp(script: str) -> str:
    """Only this page's own script runs; images come from files beside it; nothing is fetched."""
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    return (
        "default-src 'none'; img-src 'self' file: data:; style-src 'unsafe-inline'; "
        f"script-src 'sha256-{digest}'; base-uri 'none'; form-action 'none'"
    )


def _page(title: str, body: str, script: str) -> str:
    return (
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
        f'<meta http-equiv="Content-Security-Policy" content="{_csp(script)}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{text(title, 200)}</title><style>{_STYLE}</style></head>\n<body>\n{body}\n"
        f"<script>{script}</script>\n</body></html>\n"
    )


def _coord(v: float) -> str:
    """A 0-1 fraction on the SVG's 0-1000 viewBox, clamped a little outside the image."""
    return f"{min(1100.0, max(-100.0, 1000.0 * v)):.1f}"


def _rects(boxes: Sequence[Box]) -> str:
    out = []
    for b in boxes:
        x1, y1, x2, y2 = b.box
        x, y = min(x1, x2), min(y1, y2)
        w, h = abs(x2 - x1), abs(y2 - y1)
        tip = BOX_KINDS.get(b.kind, b.kind) + (f": {b.label}" if b.label else "")
        out.append(
            f'<rect class="{b.kind}" x="{_coord(x)}" y="{_coord(y)}" width="{_coord(w)}" '
            f'height="{_coord(h)}"><title>{text(tip, 300)}</title></rect>'
        )
    return "".join(out)


def _picture(pic: Picture, thumbs: Thumbnails) -> str:
    thumb = thumbs.get(pic.path)
    if isinstance(thumb, tuple):
        src, tw, th = thumb
        scale = DISPLAY_SIDE / max(tw, th)  # small images are shown larger, large ones at this size
        w, h = max(1, round(tw * scale)), max(1, round(th * scale))
        inner = f'<img src="{html.escape(src)}" width="{w}" height="{h}" loading="lazy" alt="">'
    else:
        ow, oh = pic.size if pic.size and all(isinstance(v, int) and v > 0 for v in pic.size) else (4, 3)
        scale = DISPLAY_SIDE / max(ow, oh)
        w, h = max(1, round(ow * scale)), max(1, round(oh * scale))
        inner = f'<div class="missing" style="width:{w}px;height:{h}px">{text(thumb, 400)}</div>'
    svg = (
        f'<svg viewBox="0 0 1000 1000" preserveAspectRatio="none">{_rects(pic.boxes)}</svg>'
        if pic.boxes
        else ""
    )
    cls = "pic target" if pic.target else "pic"
    return (
        f'<figure class="{cls}"><div class="frame" style="width:{w}px;height:{h}px">{inner}{svg}</div>'
        f"<figcaption>{text(pic.caption, 200)}</figcaption></figure>"
    )


def _card(card: Card, thumbs: Thumbnails) -> str:
    facts = " · ".join(f"{text(k, 100)}: {text(v, 300)}" for k, v in card.facts)
    parts = [
        f'<article class="card" id="i{card.index}" data-index="{card.index}" data-outcome="{text(card.outcome, 40)}">',
        f'<h3>#{card.index} · <span class="o o-{text(card.outcome, 40)}">{text(card.outcome, 40)}</span> · '
        f"{text(card.title, 300)}</h3>",
        f'<div class="pics">{"".join(_picture(p, thumbs) for p in card.pictures)}</div>',
    ]
    if facts:
        parts.append(f'<div class="facts">{facts}</div>')
    for heading, body in card.texts:
        parts.append(f"<div><b>{text(heading, 100)}</b><pre>{text(body)}</pre></div>")
    parts.append("</article>")
    return "\n".join(parts)


def _legend(kinds: Sequence[str]) -> str:
    swatch = '<svg width="30" height="14"><rect class="{}" x="2" y="2" width="26" height="10"/></svg> {}'
    shown = " ".join(swatch.format(k, text(BOX_KINDS.get(k, k), 100)) for k in kinds)
    framed = "; a framed image is the one the answer belongs in" if "pred" in kinds else ""
    return f'<p class="legend">{shown}{framed}</p>'


def safe_name(name: str, taken: set[str]) -> str:
    """A file-name stem for a group name (data text): [A-Za-z0-9_.-], bounded, unique among `taken`."""
    stem = _SAFE_NAME.sub("_", str(name)).strip("._")[:60] or "group"
    out, k = stem, 2
    while out in taken:
        out, k = f"{stem}_{k}", k + 1
    taken.add(out)
    return out


def check_view_dir(view_dir: Path) -> None:
    """Refuse a folder that holds files but is not a view this module wrote (no manifest.json)."""
    view_dir = Path(view_dir)
    if view_dir.exists() and not view_dir.is_dir():
        raise OutputExistsError(f"{view_dir} is a file, not a viewer folder")
    if view_dir.is_dir() and any(view_dir.iterdir()) and not (view_dir / MANIFEST).is_file():
        raise OutputExistsError(
            f"{view_dir} holds files that no viewer wrote (no {MANIFEST}); move them away"
        )


def write_pages(
    view_dir,
    title: str,
    groups: Sequence[Group],
    outcomes: Sequence[str],
    summary: Sequence[str] = (),
    links: Sequence[tuple[str, str]] = (),
    page_size: int = PAGE_SIZE,
    thumb_side: int = THUMB_SIDE,
    kinds: Sequence[str] = ("gt", "pred"),
    workers: int = 1,
) -> Written:
    """index.html (a table of groups x outcomes, linked) and GROUP-K.html pages of `page_size` cards.

    `summary`: lines of plain text for the index; `links`: (label, relative href) shown on every page;
    `kinds`: the box classes the legend explains; `workers`: processes that write the thumbnails.
    Pages of an earlier view that this one does not write are removed (thumbnails are kept for reuse).
    """
    if page_size < 1:
        raise ValueError(f"page size must be at least 1, got {page_size}")
    view_dir = Path(view_dir)
    check_view_dir(view_dir)
    view_dir.mkdir(parents=True, exist_ok=True)
    old = _read_manifest(view_dir)
    thumbs = Thumbnails(
        view_dir, thumb_side, old.get("thumbs") if isinstance(old.get("thumbs"), dict) else None
    )
    thumbs.prepare([p.path for g in groups for c in g.cards for p in c.pictures], workers)
    where: dict[str, str] = {}
    rows, written, total = [], [], sum(len(g.cards) for g in groups)
    done, taken = 0, {"index"}
    link_html = "".join(f'<a href="{html.escape(href)}">{text(label, 100)}</a>' for label, href in links)
    for group in groups:
        stem = safe_name(group.name, taken)
        chunks = [group.cards[i : i + page_size] for i in range(0, len(group.cards), page_size)] or [[]]
        names = [f"{stem}-{k}.html" for k in range(1, len(chunks) + 1)]
        first_of: dict[str, str] = {}
        for k, (name, cards) in enumerate(zip(names, chunks, strict=True)):
            for c in cards:
                where[str(c.index)] = name
                first_of.setdefault(c.outcome, name)
            nav = ['<a href="index.html">index</a>', link_html]
            if k:
                nav.append(f'<a class="page" href="{names[k - 1]}">&larr; page {k}</a>')
            if k + 1 < len(names):
                nav.append(f'<a class="page" href="{names[k + 1]}">page {k + 2} &rarr;</a>')
            counts = {o: sum(c.outcome == o for c in cards) for o in outcomes}
            filters = "".join(
                f'<label><input type="checkbox" data-filter="{text(o, 40)}" checked> {text(o, 40)} ({n})</label>'
                for o, n in counts.items()
            )
            body = (
                f"<h1>{text(title, 300)}: {text(group.title, 200)} (page {k + 1} of {len(names)})</h1>"
                f"<nav>{''.join(nav)}</nav>{_legend(kinds)}"
                f'<p class="filters">show: {filters} — <span id="shown">{len(cards)}</span> shown</p>\n'
                + "\n".join(_card(c, thumbs) for c in cards)
                + f"<nav>{''.join(nav)}</nav>"
            )
            atomic_write_text(view_dir / name, _page(f"{title}: {group.title}", body, _FILTER_SCRIPT))
            written.append(name)
            done += len(cards)
            if done // 1000 > (done - len(cards)) // 1000 or done == total:
                log.info("viewer: %d of %d instance(s) written (%s)", done, total, name)
        counts = {o: sum(c.outcome == o for c in group.cards) for o in outcomes}
        cells = "".join(
            f'<td><a class="page" href="{first_of[o]}#only={text(o, 40)}">{n}</a></td>' if n else "<td>0</td>"
            for o, n in counts.items()
        )
        pages = " ".join(f'<a href="{n}">{k}</a>' for k, n in enumerate(names, start=1))
        rows.append(
            f"<tr><td>{text(group.title, 200)}</td><td>{len(group.cards)}</td>{cells}<td>{pages}</td></tr>"
        )
    head = "".join(f"<th>{text(o, 40)}</th>" for o in outcomes)
    where_json = json.dumps(where, separators=(",", ":")).replace("<", "\\u003c")
    body = (
        f"<h1>{text(title, 300)}</h1><nav>{link_html}</nav>"
        + "".join(f"<p>{text(line, 2000)}</p>" for line in summary)
        + '<p id="jump"></p>'
        + f"<table><tr><th>task</th><th>n</th>{head}<th>pages</th></tr>{''.join(rows)}</table>"
        + f'<script type="application/json" id="where">{where_json}</script>'
    )
    index = view_dir / "index.html"
    atomic_write_text(index, _page(title, body, _JUMP_SCRIPT))
    for stale in set(old.get("files", [])) - set(written):
        if re.fullmatch(r"[A-Za-z0-9_.-]+-\d+\.html", stale):
            (view_dir / stale).unlink(missing_ok=True)
    atomic_write_text(
        view_dir / MANIFEST,
        json.dumps({"title": title, "files": written, "pages": where, "thumbs": thumbs.sizes()}) + "\n",
    )
    size = sum(f.stat().st_size for f in view_dir.rglob("*") if f.is_file())
    return Written(index, len(written), total, thumbs.new, thumbs.reused, thumbs.errors, size)


def _read_manifest(view_dir: Path) -> dict:
    try:
        data = json.loads((view_dir / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def page_of(view_dir, index: int) -> str | None:
    """The page (relative to the view folder) that shows an instance, from the view's manifest."""
    page = _read_manifest(Path(view_dir)).get("pages", {}).get(str(index))
    return page if isinstance(page, str) and os.sep not in page else None
