"""The synthetic sample: exact raw layout, deterministic, learnable, and broken where it says."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score

from helpers import write_params
from llavac.data import mvsa
from llavac.data.sample import MIN_PAIRS, SampleSummary, write_sample
from llavac.labels import label_rule

N_PAIRS, MIN_SIDE, MAX_SIDE = 210, 40, 96


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SampleSummary]:
    out_dir = tmp_path_factory.mktemp("sample")
    return out_dir / "MVSA_Single", write_sample(out_dir, N_PAIRS, seed=7, min_side=MIN_SIDE, max_side=MAX_SIDE)


def _label_rows(raw_dir: Path) -> list[mvsa.LabelRow]:
    lines = (raw_dir / mvsa.LABEL_FILE).read_bytes().decode("ascii").split("\r\n")[1:-1]
    return [row for row in map(mvsa.parse_label_line, lines) if isinstance(row, mvsa.LabelRow)]


def _dropped_ids(summary: SampleSummary) -> set[int]:
    return set().union(*map(set, summary.drops.values()))


def _tree(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def test_same_seed_writes_byte_identical_files_and_another_seed_does_not(tmp_path: Path) -> None:
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        write_sample(tmp_path / name, 40, seed=seed, min_side=MIN_SIDE, max_side=MAX_SIDE)
    assert _tree(tmp_path / "a") == _tree(tmp_path / "b")
    assert _tree(tmp_path / "a") != _tree(tmp_path / "c")


def test_layout_is_the_raw_mvsa_layout(sample: tuple[Path, SampleSummary]) -> None:
    raw_dir, summary = sample
    raw = (raw_dir / mvsa.LABEL_FILE).read_bytes()
    assert raw.startswith(b"ID\ttext,image\r\n")
    assert raw.count(b"\n") == raw.count(b"\r\n") == summary.label_rows + 1
    names = {path.name for path in (raw_dir / mvsa.DATA_DIR).iterdir()}
    assert names and all(name.split(".")[0].isdigit() and name.split(".")[1] in ("txt", "jpg") for name in names)
    assert (raw_dir.parent / "splits" / "README.txt").read_text().startswith("The official split files")
    assert [p.name for p in (raw_dir.parent / "splits").iterdir()] == ["README.txt"]
    assert sorted(p.name for p in raw_dir.iterdir()) == [mvsa.SYNTHETIC_MARKER, mvsa.DATA_DIR, mvsa.LABEL_FILE]
    assert mvsa.is_synthetic(raw_dir) and not mvsa.is_synthetic(raw_dir / mvsa.DATA_DIR)


def test_ids_have_gaps_and_one_is_duplicated(sample: tuple[Path, SampleSummary]) -> None:
    raw_dir, summary = sample
    lines = (raw_dir / mvsa.LABEL_FILE).read_text(encoding="ascii").splitlines()[1:]
    ids = [int(line.split("\t")[0]) for line in lines]
    assert len(lines) == summary.label_rows == N_PAIRS
    assert max(ids) > len(set(ids))
    assert [i for i, n in Counter(ids).items() if n > 1] == summary.drops[mvsa.DUPLICATE_ID][:1]


def test_labels_are_balanced_and_include_conflicts(sample: tuple[Path, SampleSummary]) -> None:
    raw_dir, summary = sample
    rows = _label_rows(raw_dir)
    assert Counter(row.text_label for row in rows) == summary.text_labels
    assert Counter(row.image_label for row in rows) == summary.image_labels
    multimodal = Counter(label_rule(row.text_label, row.image_label) for row in rows)
    conflicts = multimodal.pop(None)
    assert 0.02 <= conflicts / len(rows) <= 0.08
    assert len(summary.drops[mvsa.LABEL_CONFLICT]) == conflicts
    for counts in (summary.text_labels, summary.image_labels, multimodal):
        assert len(counts) == 3
        assert max(counts.values()) / sum(counts.values()) <= 0.45
    one_side_neutral = [row for row in rows if row.text_label != row.image_label and label_rule(*row[1:])]
    assert len(one_side_neutral) / len(rows) > 0.2


def test_every_kind_of_breakage_is_really_there(sample: tuple[Path, SampleSummary]) -> None:
    raw_dir, summary = sample
    data = raw_dir / mvsa.DATA_DIR
    drops = {reason: ids[0] for reason, ids in summary.drops.items()}
    assert set(drops) == set(mvsa.drop_reasons(1))
    lines = (raw_dir / mvsa.LABEL_FILE).read_text(encoding="ascii").splitlines()
    line_of = {int(line.split("\t")[0]): line for line in lines[1:]}
    assert mvsa.parse_label_line(line_of[drops[mvsa.MALFORMED_LABEL_LINE]]) == mvsa.MALFORMED_LABEL_LINE
    assert mvsa.parse_label_line(line_of[drops[mvsa.UNKNOWN_LABEL]]) == mvsa.UNKNOWN_LABEL
    assert not (data / f"{drops[mvsa.MISSING_TEXT]}.txt").exists()
    assert not (data / f"{drops[mvsa.MISSING_IMAGE]}.jpg").exists()
    assert (data / f"{drops[mvsa.EMPTY_TEXT]}.txt").read_bytes() == b""
    undecodable = mvsa.decode_text((data / f"{drops[mvsa.UNDECODABLE_TEXT]}.txt").read_bytes())[0]
    assert mvsa.text_drop_reason(undecodable) == mvsa.UNDECODABLE_TEXT
    assert mvsa.inspect_image((data / f"{drops[mvsa.CORRUPT_IMAGE]}.jpg").read_bytes()) == mvsa.CORRUPT_IMAGE
    for replaced in summary.replaced_text_ids:
        text, note = mvsa.decode_text((data / f"{replaced}.txt").read_bytes())
        assert note is not None and mvsa.text_drop_reason(text) is None
    for orphan in summary.unlabelled_ids:
        assert (data / f"{orphan}.txt").exists() and orphan not in line_of
    assert summary.expected_pairs == summary.label_rows - sum(len(ids) for ids in summary.drops.values())


def test_tweets_are_gbk_and_carry_twitter_noise(sample: tuple[Path, SampleSummary]) -> None:
    raw_dir, summary = sample
    broken = _dropped_ids(summary) | set(summary.replaced_text_ids)
    raws = [p.read_bytes() for p in (raw_dir / mvsa.DATA_DIR).glob("*.txt") if int(p.stem) not in broken]
    texts = [raw.decode("gbk") for raw in raws]  # strict: every intact tweet is valid GBK
    assert all(len(text.split()) < 20 for text in texts)
    assert any(raw != raw.decode("gbk").encode("ascii", "ignore") for raw in raws)
    for marker in ("RT @", "http://t.co/", "#", "?", "…"):
        assert any(marker in text for text in texts), marker
    assert any(any("\u4e00" <= ch <= "\u9fff" for ch in text) for text in texts)


def test_images_are_non_square_and_within_the_side_range(sample: tuple[Path, SampleSummary]) -> None:
    raw_dir, summary = sample
    corrupt = set(summary.drops[mvsa.CORRUPT_IMAGE])
    for path in (raw_dir / mvsa.DATA_DIR).glob("*.jpg"):
        if int(path.stem) not in corrupt:
            width, height = Image.open(path).size
            assert width != height and MIN_SIDE <= min(width, height) and max(width, height) <= MAX_SIDE


def test_both_sides_are_learnable_far_above_the_majority_class(sample: tuple[Path, SampleSummary]) -> None:
    """A bag of words predicts the text label, the mean colour of a 32x32 thumbnail the image label."""
    raw_dir, summary = sample
    skip = _dropped_ids(summary) - set(summary.drops[mvsa.LABEL_CONFLICT])
    rows = [row for row in _label_rows(raw_dir) if row.id not in skip]
    data = raw_dir / mvsa.DATA_DIR
    texts = [mvsa.decode_text((data / f"{row.id}.txt").read_bytes())[0] for row in rows]
    thumbs = [np.asarray(Image.open(data / f"{row.id}.jpg").convert("RGB").resize((32, 32))) for row in rows]
    colours = np.array([thumb.reshape(-1, 3).mean(axis=0) for thumb in thumbs]) / 255
    for features, labels in (
        (CountVectorizer().fit_transform(texts), [row.text_label for row in rows]),
        (colours, [row.image_label for row in rows]),
    ):
        majority = max(Counter(labels).values()) / len(labels)
        accuracy = cross_val_score(LogisticRegression(max_iter=1000), features, labels, cv=5).mean()
        assert majority < 0.45 and accuracy > 0.9


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least"):
        write_sample(tmp_path / "small", MIN_PAIRS - 1, seed=0, min_side=MIN_SIDE, max_side=MAX_SIDE)
    with pytest.raises(ValueError, match="min_side"):
        write_sample(tmp_path / "sides", 40, seed=0, min_side=50, max_side=50)
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "old.txt").write_text("stale")
    with pytest.raises(FileExistsError, match="not empty"):
        write_sample(tmp_path / "used", 40, seed=0, min_side=MIN_SIDE, max_side=MAX_SIDE)


def test_stage_writes_the_sample_from_params(tmp_path: Path, run_stage) -> None:
    write_params(tmp_path, seed=99, sample={"seed": 3, "n_pairs": 30, "min_side": 20, "max_side": 30})  # sample.seed, not seed
    assert run_stage(tmp_path, "sample.py", "out") is None
    write_sample(tmp_path / "direct", 30, seed=3, min_side=20, max_side=30)
    assert _tree(tmp_path / "out") == _tree(tmp_path / "direct")
    assert run_stage(tmp_path, "sample.py", "out").startswith("error: out is not empty")
