"""A synthetic dataset in the exact raw MVSA-Single or MVSA-Multiple layout, so the whole pipeline runs
without the real data.

The sentiment is learnable on purpose, and independently per side: the tweet's label is carried by
its words (a small lexicon), the image's label by its colours and the face drawn on it (big enough
differences to survive a 32x32 downscale). Real-data nuisances are reproduced: GBK bytes, ``RT @user:``,
links, hashtags, emoji already turned into ``?``, a ``…`` ending a truncated tweet, Chinese words,
non-square images, ids with gaps, CRLF line endings, text/image disagreements including
positive-vs-negative conflicts, and one record of each kind of breakage preprocessing must report.
In the MVSA-Multiple layout each line holds three annotations whose majority is the pair's label
per side: most agree, many have one dissenting annotator, and a few sides have no majority at all.
Everything follows from ``seed``: the same arguments write byte-identical files.
"""

from __future__ import annotations

import io
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from llavac.data import mvsa
from llavac.files import write_json
from llavac.labels import LABELS, label_rule

MIN_PAIRS = 20
"""Room for every label combination and, apart from the conflicts, one record of each breakage."""

JPEG_QUALITY = 90

# Per 42 records: 24 agreeing, 16 with one neutral side, 2 positive-vs-negative conflicts (~5%).
# Each label is at most 38% of a task and 40% of the multimodal labels.
_LABEL_MIX: tuple[tuple[str, str, int], ...] = (
    ("positive", "positive", 8),
    ("neutral", "neutral", 8),
    ("negative", "negative", 8),
    ("positive", "neutral", 4),
    ("neutral", "positive", 4),
    ("negative", "neutral", 4),
    ("neutral", "negative", 4),
    ("positive", "negative", 1),
    ("negative", "positive", 1),
)

# A small lexicon, two sentiment words per tweet: a model of a few hundred thousand random-init
# parameters, adapted by LoRA alone, must be able to read the text label within a CPU minute.
SENTIMENT_WORDS: dict[str, tuple[str, ...]] = {
    "positive": ("love", "great", "happy", "amazing", "beautiful", "awesome"),
    "negative": ("hate", "sad", "terrible", "awful", "worst", "angry"),
}
_SENTIMENT_TEMPLATES = (
    "{w} {w2} {topic} today",
    "this {topic} is {w} and {w2}",
    "so {w} about the {topic}, {w2}",
    "{w} {w2} {topic}",
    "feeling {w} after the {topic}, {w2}",
    "what a {w} {topic}, {w2}",
)
_NEUTRAL_TEMPLATES = (
    "the {topic} starts at {hour} pm",
    "{topic} update from {place}",
    "watching the {topic} with {name}",
    "new post about the {topic}",
    "{topic} schedule for {day}",
    "photo of the {topic} in {place}",
)
_TOPICS = ("game", "weather", "concert", "match", "weekend", "coffee", "traffic", "meeting", "flight",
           "election", "movie", "dinner", "news", "train", "morning", "holiday", "team", "show")
_PLACES = ("london", "nyc", "paris", "tokyo", "the city", "downtown", "campus")
_NAMES = ("mike", "sarah", "the kids", "my mom", "friends", "the team")
_DAYS = ("monday", "friday", "sunday", "tomorrow", "next week")
_USERS = ("newsbot", "jess_m", "tweetking", "daily_pics", "sam", "fanpage")
_CHINESE = ("北京", "周末", "今天", "上海", "新闻", "音乐")
_ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

_BREAKAGES: tuple[str, ...] = (
    mvsa.MALFORMED_LABEL_LINE,
    mvsa.UNKNOWN_LABEL,
    mvsa.DUPLICATE_ID,
    mvsa.MISSING_TEXT,
    mvsa.MISSING_IMAGE,
    mvsa.EMPTY_TEXT,
    mvsa.UNDECODABLE_TEXT,
    mvsa.TEXT_TOO_LONG,
    mvsa.CORRUPT_IMAGE,
)
_REPLACED_TAIL = "replaced_tail"
"""Not a breakage: a tweet ending in a byte invalid even as GB18030, like id 5084 of the real data."""
_UNDECODABLE_BYTES = b"\x81\x20" * 8
"""Invalid even as GB18030 (0x81 is a lead byte, 0x20 cannot follow it) and invalid UTF-8."""

SPLITS_README = (
    "The official split files (cheema, random/CLMLF, zhang/QMF) list ids of the real {dataset}\n"
    "data and do not apply to this synthetic sample: use `splits.source: generated` with it.\n"
    "This folder exists because the split stage depends on the splits directory.\n"
)
SAMPLE_FOLDER = "MVSA_Single"
"""The sample's raw folder, whichever layout it is written in: ``data.raw_dir``'s default points
here, so ``-S dataset=mvsa-multiple`` alone switches the embedded pipeline to MVSA-Multiple."""

NO_MAJORITY_SHARE = 0.04
"""Of the pairs without another problem, the share whose text (and, separately, image) annotations
are three different labels; the real MVSA-Multiple drops 2,575 of 19,600 raw pairs for this and
for conflicts together (docs/mvsa-multiple.md)."""
DISSENT_SHARE = 0.3
"""Of the other sides, the share with one annotator out of three disagreeing (still a majority)."""


@dataclass(frozen=True)
class SampleSummary:
    """What was written, and what preprocessing should therefore report."""

    label_rows: int
    """Lines of labelResultAll.txt after the header (the duplicate row included)."""
    text_labels: dict[str, int]
    """Text labels of the well-formed label rows."""
    image_labels: dict[str, int]
    """Image labels of the well-formed label rows."""
    drops: dict[str, list[int]]
    """Expected drop reason -> the id of each label row dropped for it (the duplicated id twice)."""
    replaced_text_ids: list[int]
    """Ids whose text ends in bytes invalid even as GB18030 (like id 5084 of the real data): kept."""
    unlabelled_ids: list[int]
    """Ids with files in data/ but no label row."""

    @property
    def expected_pairs(self) -> int:
        """Label rows that survive preprocessing."""
        return self.label_rows - sum(len(ids) for ids in self.drops.values())


def write_sample(
    out_dir: Path, n_pairs: int, seed: int, min_side: int, max_side: int, dataset: str = "mvsa-single"
) -> SampleSummary:
    """Write ``out_dir/MVSA_Single`` (``n_pairs`` label rows in ``dataset``'s layout, and
    ``mvsa.SYNTHETIC_MARKER`` saying what it is) and ``out_dir/splits/README.txt``.

    Image sides are drawn from ``[min_side, max_side]`` and never equal, since the model pads
    images to square and must be fed non-square ones. ``out_dir`` must be absent or empty, so no
    stale file of an earlier, larger sample survives. The MVSA-Multiple annotations are drawn
    from their own generator (seeded by ``seed`` too), after everything both layouts share: its
    texts and images are MVSA-Single's of the same seed.
    """
    annotators = mvsa.ANNOTATORS[dataset]
    if n_pairs < MIN_PAIRS:
        raise ValueError(f"n_pairs={n_pairs}: a sample needs at least {MIN_PAIRS} pairs")
    if not 8 <= min_side < max_side:
        raise ValueError(f"image sides must satisfy 8 <= min_side < max_side, got {min_side}, {max_side}")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} is not empty; remove it first (dvc repro does) to write a fresh sample")
    rng = np.random.default_rng(seed)
    data_dir = out_dir / SAMPLE_FOLDER / mvsa.DATA_DIR
    data_dir.mkdir(parents=True)

    ids = _ids_with_gaps(n_pairs - 1, rng)  # the duplicated id adds the last row
    # Round-robin over the mix, so that even a small sample has every combination, conflicts included.
    rounds = max(count for *_, count in _LABEL_MIX)
    pattern = [(text, image) for level in range(rounds) for text, image, count in _LABEL_MIX if count > level]
    labels = [pattern[k % len(pattern)] for k in range(len(ids))]
    rng.shuffle(labels)
    conflicts = {k for k, (text, image) in enumerate(labels) if label_rule(text, image) is None}
    picked = rng.choice(sorted(set(range(len(ids))) - conflicts), size=len(_BREAKAGES) + 1, replace=False)
    breakage = dict(zip(picked.tolist(), (*_BREAKAGES, _REPLACED_TAIL)))

    rows = [(ids[k], text, image, breakage.get(k)) for k, (text, image) in enumerate(labels)]
    for record_id, text_label, image_label, broken in rows:
        _write_pair(data_dir / str(record_id), text_label, image_label, broken, rng, (min_side, max_side))
    unlabelled = ids[-1] + 1
    _write_pair(data_dir / str(unlabelled), "neutral", "neutral", None, rng, (min_side, max_side))
    duplicated = picked[_BREAKAGES.index(mvsa.DUPLICATE_ID)]
    text_label, image_label = labels[duplicated]
    rows.append((ids[duplicated], _other_label(text_label), image_label, None))  # a late re-annotation

    clean = sorted(set(range(len(ids))) - conflicts - set(breakage))
    annotations, no_majority = _annotations(rows, clean, annotators, np.random.default_rng((seed, annotators)))
    header = "\t".join(["ID", *["text,image"] * annotators])
    lines = [header, *(_label_line(row[0], votes, row[3]) for row, votes in zip(rows, annotations, strict=True))]
    marker = {"written_by": "llavac.data.sample", "n_pairs": n_pairs, "seed": seed, "sides": [min_side, max_side]}
    write_json(out_dir / SAMPLE_FOLDER / mvsa.SYNTHETIC_MARKER, marker)
    (out_dir / SAMPLE_FOLDER / mvsa.LABEL_FILE).write_bytes("".join(f"{line}\r\n" for line in lines).encode("ascii"))
    (out_dir / "splits").mkdir()
    (out_dir / "splits" / "README.txt").write_text(SPLITS_README.format(dataset=mvsa.DATASET_NAMES[dataset]), encoding="utf-8")

    well_formed = [row for row in rows if row[3] not in (mvsa.MALFORMED_LABEL_LINE, mvsa.UNKNOWN_LABEL)]
    drops = {reason: sorted(row[0] for row in rows if row[3] == reason) for reason in _BREAKAGES}
    drops[mvsa.DUPLICATE_ID] *= 2  # its re-annotation row is dropped too
    drops |= {reason: sorted(ids[k] for k in no_majority[reason]) for reason in no_majority}
    drops[mvsa.LABEL_CONFLICT] = sorted(ids[k] for k in conflicts)
    lost = {side: {ids[k] for k in no_majority.get(reason, ())}
            for side, reason in (("text", mvsa.NO_MAJORITY_TEXT), ("image", mvsa.NO_MAJORITY_IMAGE))}
    return SampleSummary(
        label_rows=len(rows),
        text_labels=dict(sorted(Counter(row[1] for row in well_formed if row[0] not in lost["text"]).items())),
        image_labels=dict(sorted(Counter(row[2] for row in well_formed if row[0] not in lost["image"]).items())),
        drops=drops,
        replaced_text_ids=[ids[k] for k, kind in breakage.items() if kind == _REPLACED_TAIL],
        unlabelled_ids=[unlabelled],
    )


def _write_pair(
    stem: Path, text_label: str, image_label: str, broken: str | None, rng: np.random.Generator, sides: tuple[int, int]
) -> None:
    """``<stem>.txt`` and ``<stem>.jpg``, damaged as ``broken`` says."""
    text = _tweet(text_label, rng).encode("gbk")
    if broken == mvsa.EMPTY_TEXT:
        text = b""
    elif broken == mvsa.UNDECODABLE_TEXT:
        text = _UNDECODABLE_BYTES
    elif broken == mvsa.TEXT_TOO_LONG:
        text = b" ".join([text] * (mvsa.MAX_TEXT_CHARS // len(text) + 1))
    elif broken == _REPLACED_TAIL:
        text += b"\x81"  # a lone lead byte at the end
    if broken != mvsa.MISSING_TEXT:
        stem.with_suffix(".txt").write_bytes(text)
    jpeg = _jpeg(image_label, *sides, rng)
    if broken == mvsa.CORRUPT_IMAGE:
        jpeg = jpeg[: len(jpeg) // 2]
    if broken != mvsa.MISSING_IMAGE:
        stem.with_suffix(".jpg").write_bytes(jpeg)


def _ids_with_gaps(n: int, rng: np.random.Generator) -> list[int]:
    """Increasing ids from 1 with about 6% gaps of 1-3 ids (the real file skips 260 of 5129)."""
    steps = 1 + (rng.random(n) < 0.06) * rng.integers(1, 4, size=n)
    steps[0] = 1
    steps[n // 2] = 2  # at least one gap, whatever the seed
    return np.cumsum(steps).tolist()


def _annotations(
    rows: list[tuple[int, str, str, str | None]], clean: list[int], annotators: int, rng: np.random.Generator
) -> tuple[list[list[tuple[str, str]]], dict[str, list[int]]]:
    """Per row, ``annotators`` (text, image) annotations whose majority is the row's labels; and, per
    ``no_majority_*`` reason, the rows (indices into ``clean``'s range) given three different labels
    on that side instead. One annotator: the row's labels as they are, and no such rows."""
    if annotators == 1:
        return [[(text, image)] for _, text, image, _ in rows], {}
    chosen = rng.choice(clean, size=2 * max(1, round(NO_MAJORITY_SHARE * len(clean))), replace=False).tolist()
    no_majority = {mvsa.NO_MAJORITY_TEXT: sorted(chosen[::2]), mvsa.NO_MAJORITY_IMAGE: sorted(chosen[1::2])}
    annotations = []
    for k, (_, text, image, _) in enumerate(rows):
        sides = [
            _votes(label, annotators, k in no_majority[reason], rng)
            for label, reason in ((text, mvsa.NO_MAJORITY_TEXT), (image, mvsa.NO_MAJORITY_IMAGE))
        ]
        annotations.append(list(zip(*sides, strict=True)))
    return annotations, no_majority


def _votes(label: str, annotators: int, tie: bool, rng: np.random.Generator) -> list[str]:
    """``annotators`` labels of one side in random order: all three labels once (``tie``), or a
    majority of ``label`` with at most one dissenting annotator (``DISSENT_SHARE`` of the time)."""
    if tie:
        votes = list(LABELS)
    else:
        others = [other for other in LABELS if other != label]
        votes = [label] * (annotators - 1) + [_pick(tuple(others), rng) if rng.random() < DISSENT_SHARE else label]
    return [votes[i] for i in rng.permutation(len(votes))]


def _label_line(record_id: int, annotations: list[tuple[str, str]], broken: str | None) -> str:
    """One line of labelResultAll.txt: the id, then ``<text>,<image>`` per annotator, tab-separated."""
    cells = [f"{text},{image}" for text, image in annotations]
    if broken == mvsa.MALFORMED_LABEL_LINE:  # the image label is missing, or (several annotators) a whole column
        cells = [cells[0].split(",")[0]] if len(cells) == 1 else cells[:-1]
    elif broken == mvsa.UNKNOWN_LABEL:
        cells[0] = "happy," + annotations[0][1]
    return "\t".join([str(record_id), *cells])


def _other_label(label: str) -> str:
    """A different annotation for the duplicated id, so the duplicate is genuinely ambiguous."""
    return "neutral" if label != "neutral" else "positive"


def _pick(options: tuple[str, ...], rng: np.random.Generator) -> str:
    return options[int(rng.integers(len(options)))]


def _between(low: int, high: int, rng: np.random.Generator) -> int:
    return int(rng.integers(low, high + 1))


def _tweet(label: str, rng: np.random.Generator) -> str:
    """A short tweet whose sentiment words (or their absence) carry ``label``, with Twitter noise around them."""
    topic = _pick(_TOPICS, rng)
    if label == "neutral":
        body = _pick(_NEUTRAL_TEMPLATES, rng).format(
            topic=topic, hour=_between(1, 11, rng), place=_pick(_PLACES, rng), name=_pick(_NAMES, rng),
            day=_pick(_DAYS, rng),
        )
    else:
        lexicon = SENTIMENT_WORDS[label]
        body = _pick(_SENTIMENT_TEMPLATES, rng).format(w=_pick(lexicon, rng), w2=_pick(lexicon, rng), topic=topic)
        body += _pick(("", "!", "!!", " :)" if label == "positive" else " :("), rng)
    if rng.random() < 0.5:
        body = body[0].upper() + body[1:]
    if rng.random() < 0.1:
        body = f"{_pick(_CHINESE, rng)} {body}"
    if rng.random() < 0.25:
        body = f"RT @{_pick(_USERS, rng)}{_between(1, 99, rng)}: {body}"
    extras = []
    if rng.random() < 0.35:
        extras.append("#" + _pick((topic, *SENTIMENT_WORDS.get(label, _TOPICS)), rng))
    if rng.random() < 0.2:
        extras.append("?" * _between(1, 3, rng))
    if rng.random() < 0.3:
        extras.append("http://t.co/" + "".join(_pick(_ALNUM, rng) for _ in range(10)))
    if rng.random() < 0.1:
        # Cut at 140 characters, as a retweet is: what is lost is the tail, here the extras.
        return " ".join([body, *extras[:-1]]) + "…"
    return " ".join([body, *extras])


def _jpeg(label: str, min_side: int, max_side: int, rng: np.random.Generator) -> bytes:
    """A non-square JPEG: warm yellow and a smile, dark blue/red and a frown, or grey and a flat mouth."""
    width, height = (_between(min_side, max_side, rng) for _ in range(2))
    if width == height:
        height += 1 if height < max_side else -1
    if label == "positive":
        background = (_between(225, 255, rng), _between(170, 215, rng), _between(0, 60, rng))
        face, ink = (255, 236, 110), (90, 50, 0)
    elif label == "negative" and rng.random() < 0.5:
        background = (_between(10, 40, rng), _between(20, 50, rng), _between(90, 140, rng))
        face, ink = (150, 160, 200), (10, 10, 40)
    elif label == "negative":
        background = (_between(110, 150, rng), _between(0, 25, rng), _between(10, 40, rng))
        face, ink = (200, 120, 120), (40, 0, 0)
    else:
        grey = _between(120, 165, rng)
        background = (grey, grey + _between(-4, 4, rng), grey + _between(-4, 4, rng))
        face, ink = (205, 205, 205), (70, 70, 70)
    image = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(image)
    radius = min(width, height) * _between(28, 40, rng) / 100
    cx = width / 2 + _between(-3, 3, rng) * width / 50
    cy = height / 2 + _between(-3, 3, rng) * height / 50
    line = max(1, round(radius / 8))
    draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=face, outline=ink, width=line)
    for eye_x in (cx - 0.35 * radius, cx + 0.35 * radius):
        eye_y = cy - 0.3 * radius
        draw.ellipse((eye_x - line, eye_y - line, eye_x + line, eye_y + line), fill=ink)
    left, right = cx - 0.5 * radius, cx + 0.5 * radius
    if label == "positive":
        draw.arc((left, cy - 0.1 * radius, right, cy + 0.6 * radius), 20, 160, fill=ink, width=line)
    elif label == "negative":
        draw.arc((left, cy + 0.25 * radius, right, cy + 0.95 * radius), 200, 340, fill=ink, width=line)
    else:
        draw.line((left, cy + 0.35 * radius, right, cy + 0.35 * radius), fill=ink, width=line)
    # Mild sensor-like (luminance) noise: photo-like JPEG sizes and decode cost, and no two images alike.
    noise = (rng.standard_normal((height, width), dtype=np.float32) * 8).astype(np.int16)
    noisy = np.clip(np.asarray(image, dtype=np.int16) + noise[..., None], 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noisy).save(buffer, "JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()
