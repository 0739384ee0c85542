"""Split protocols, generated and official, and the `split` stage's outputs and failures."""

from __future__ import annotations

import hashlib
import json
from itertools import cycle, islice
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import write_params as write_repo_params
from llavac.data.official import official_splits
from llavac.data.pairs import PAIR_COLUMNS, read_pairs
from llavac.data.protocols import generated_splits
from llavac.labels import label_rule


# The published codes, written out here independently of the library's tables.
CHEEMA_CODE = {"neutral": 0, "positive": 1, "negative": 2}
CLMLF_CODE = {"positive": 0, "neutral": 1, "negative": 2}

# (text, image) annotations the label rule keeps, agreeing ones first.
AGREE = [("positive", "positive"), ("neutral", "neutral"), ("negative", "negative")]
DISAGREE = [("neutral", "positive"), ("positive", "neutral"), ("neutral", "negative"), ("negative", "neutral")]


def pairs_table(annotations: list[tuple[str, str]], ids: list[int] | None = None) -> pd.DataFrame:
    """A pairs table in the preprocess stage's schema for (text, image) annotations."""
    ids = ids if ids is not None else [7 + 3 * row for row in range(len(annotations))]
    return pd.DataFrame(
        {
            "id": pd.Series(ids, dtype="int64"),
            "text": [f"RT @user tweet {pair_id} http://t.co/x" for pair_id in ids],
            "text_label": [text for text, _ in annotations],
            "image_label": [image for _, image in annotations],
            "multimodal_label": [label_rule(text, image) for text, image in annotations],
            "image_path": [f"data/{pair_id}.jpg" for pair_id in ids],
            "image_sha256": [hashlib.sha256(str(pair_id).encode()).hexdigest() for pair_id in ids],
            "image_width": 64,
            "image_height": 48,
        }
    )


def mvsa_sized_pairs() -> pd.DataFrame:
    """4511 pairs with the real counts: multimodal positive 2683 / neutral 470 / negative 1358, of
    which 2592 agree (positive 1398 / neutral 470 / negative 724), in a shuffled order."""
    annotations = (
        [("positive", "positive")] * 1398
        + [("neutral", "positive")] * 700
        + [("positive", "neutral")] * 585
        + [("neutral", "neutral")] * 470
        + [("negative", "negative")] * 724
        + [("neutral", "negative")] * 400
        + [("negative", "neutral")] * 234
    )
    order = np.random.default_rng(3).permutation(len(annotations))
    return pairs_table([annotations[row] for row in order], ids=list(range(1, len(annotations) + 1)))


def small_pairs(n: int = 100) -> pd.DataFrame:
    return pairs_table(list(islice(cycle(AGREE + DISAGREE), n)))


def sizes(splits) -> list[tuple[int, int, int]]:
    return [(len(split.train), len(split.val), len(split.test)) for split in splits]


def ids(frame: pd.DataFrame) -> set[int]:
    return set(frame["id"].tolist())


# --- generated ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mvsa() -> pd.DataFrame:
    return mvsa_sized_pairs()


def test_generated_cheema_has_the_published_sizes_and_partitions_the_pairs(mvsa):
    splits = generated_splits(mvsa, "cheema", seed=42)
    assert [split.number for split in splits] == list(range(1, 11))
    assert sizes(splits) == [(3607, 452, 452)] + [(3609, 451, 451)] * 9
    tested = [pair_id for split in splits for pair_id in split.test["id"]]
    assert sorted(tested) == sorted(mvsa["id"])  # every pair in exactly one test fold
    for split in splits:
        parts = [ids(frame) for frame in split.parts().values()]
        assert set().union(*parts) == ids(mvsa) and sum(map(len, parts)) == len(mvsa)
        for part in (split.val, split.test):  # stratified: a tenth of each class, rounded either way
            counts = part["multimodal_label"].value_counts()
            assert 268 <= counts["positive"] <= 269 and counts["neutral"] == 47 and 135 <= counts["negative"] <= 136


def test_generated_random_is_clmlf_8_1_1(mvsa):
    (split,) = generated_splits(mvsa, "random", seed=42)
    assert sizes([split]) == [(3611, 450, 450)]
    for part in (split.val, split.test):
        assert part["multimodal_label"].value_counts().to_dict() == {"positive": 268, "negative": 135, "neutral": 47}
    assert ids(split.train) | ids(split.val) | ids(split.test) == ids(mvsa)


def test_generated_zhang_keeps_agreeing_pairs_60_20_20(mvsa):
    (split,) = generated_splits(mvsa, "zhang", seed=42)
    assert sizes([split]) == [(1555, 518, 519)]
    union = pd.concat(split.parts().values())
    assert len(union) == union["id"].nunique() == 2592
    assert (union["text_label"] == union["image_label"]).all()


@pytest.mark.parametrize("protocol", ["cheema", "random", "zhang"])
def test_generated_splits_are_deterministic_under_the_seed(protocol):
    pairs = small_pairs(200)
    first = generated_splits(pairs, protocol, seed=7)
    again = generated_splits(pairs.sample(frac=1, random_state=1), protocol, seed=7)  # row order must not matter
    other = generated_splits(pairs, protocol, seed=8)
    for a, b in zip(first, again, strict=True):
        for part in ("train", "val", "test"):
            pd.testing.assert_frame_equal(a.parts()[part], b.parts()[part])
    assert [ids(split.test) for split in first] != [ids(split.test) for split in other]
    assert list(first[0].test.columns) == list(PAIR_COLUMNS)
    assert first[0].test["id"].is_monotonic_increasing


def test_generated_refuses_too_few_pairs_with_the_counts():
    with pytest.raises(ValueError, match=r"cannot draw zhang splits from 3 pairs"):
        generated_splits(pairs_table(AGREE), "zhang", seed=0)


# --- official files, written in the published formats ------------------------------------------


def write_cheema(folder: Path, pairs: pd.DataFrame) -> list[dict[str, list[int]]]:
    """valid_pairlist.txt and 10 splits of shuffled row indices; returns the row indices used."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = [
        f"{row.id},{CHEEMA_CODE[row.multimodal_label]},{CHEEMA_CODE[row.text_label]},{CHEEMA_CODE[row.image_label]}"
        for row in pairs.itertuples()
    ]
    (folder / "valid_pairlist.txt").write_text("\n".join(lines) + "\n")
    rng = np.random.default_rng(0)
    rows = np.arange(len(pairs))
    written = []
    for number in range(1, 11):
        test = rows[(rows % 10) == number - 1]
        val = rows[(rows % 10) == number % 10]
        parts = {"train": np.setdiff1d(rows, np.concatenate([test, val])), "val": val, "test": test}
        for part, indices in parts.items():
            (folder / f"{part}_{number}.txt").write_text("".join(f"{i}\n" for i in rng.permutation(indices)))
        written.append({part: indices.tolist() for part, indices in parts.items()})
    return written


def clmlf_records(frame: pd.DataFrame) -> list[dict]:
    return [
        {
            "id": str(row.id),
            "text": "RT @user caf\u00c3\u00a9 \u00e2\u20ac\u00a6",
            "emotion_label": CLMLF_CODE[row.multimodal_label],
        }
        for row in frame.itertuples()
    ]


def write_random(folder: Path, parts: dict[str, pd.DataFrame]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for stem, frame in parts.items():
        (folder / f"{stem}.json").write_text(json.dumps(clmlf_records(frame)))


def write_zhang(folder: Path, parts: dict[str, pd.DataFrame]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for stem, frame in parts.items():
        lines = [
            json.dumps(
                {
                    "id": str(row.id),
                    "label": row.multimodal_label,
                    "text": "caf\u00c3\u00a9",
                    "img": f"data/{row.id}.jpg",
                }
            )
            for row in frame.itertuples()
        ]
        (folder / f"{stem}.jsonl").write_text("\n".join(lines) + "\n")


def three_way(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """train/dev/test of a frame, in the published file stems."""
    return {"train": frame.iloc[::3], "dev": frame.iloc[1::3], "test": frame.iloc[2::3]}


def test_official_cheema_reads_row_indices_not_ids(tmp_path):
    pairs = small_pairs(60)  # ids 7, 10, 13, ...: a row index read as an id would miss
    written = write_cheema(tmp_path / "cheema", pairs)
    splits, mismatches = official_splits(pairs, "cheema", tmp_path)
    assert mismatches == []
    assert len(splits) == 10
    for split, rows in zip(splits, written, strict=True):
        for part, frame in split.parts().items():
            assert frame["id"].tolist() == sorted(pairs["id"].iloc[rows[part]].tolist())
            pd.testing.assert_frame_equal(frame, pairs[pairs["id"].isin(frame["id"])].reset_index(drop=True))
    assert sorted(i for split in splits for i in split.test["id"]) == pairs["id"].tolist()


def test_official_cheema_label_codes_and_absent_ids_are_mismatches(tmp_path):
    pairs = small_pairs(60)
    write_cheema(tmp_path / "cheema", pairs)
    pairlist = tmp_path / "cheema" / "valid_pairlist.txt"
    lines = pairlist.read_text().splitlines()
    # row 0 is positive/positive/positive (1,1,1): publish its image as negative (2) instead;
    # row 1 is neutral everywhere (0,0,0): our pairs lose it.
    assert lines[0].endswith(",1,1,1") and lines[1].endswith(",0,0,0")
    lines[0] = lines[0][: -len("1")] + "2"
    pairlist.write_text("\n".join(lines) + "\n")
    first, second = pairs["id"].iloc[0], pairs["id"].iloc[1]

    splits, mismatches = official_splits(pairs[pairs["id"] != second], "cheema", tmp_path)

    assert [(m.id, m.file, m.problem) for m in mismatches] == [
        (first, "cheema/valid_pairlist.txt", "image_label: published negative, ours positive"),
        (second, "cheema/valid_pairlist.txt", "absent from the pairs"),
    ]
    assert second not in set().union(*(ids(frame) for split in splits for frame in split.parts().values()))


def test_official_cheema_refuses_rows_outside_the_pairlist(tmp_path):
    pairs = small_pairs(60)
    write_cheema(tmp_path / "cheema", pairs)
    (tmp_path / "cheema" / "test_4.txt").write_text("3\n60\n")
    with pytest.raises(ValueError, match=r"test_4.txt lists rows \[60\] outside valid_pairlist.txt's 60 rows"):
        official_splits(pairs, "cheema", tmp_path)


def test_official_random_decodes_clmlf_codes_and_dev_becomes_val(tmp_path):
    pairs = small_pairs(60)
    published = three_way(pairs)
    write_random(tmp_path / "random", published)
    (split,), mismatches = official_splits(pairs, "random", tmp_path)
    assert mismatches == []
    assert ids(split.train) == ids(published["train"])
    assert ids(split.val) == ids(published["dev"])
    assert ids(split.test) == ids(published["test"])

    # a published neutral where our rule says positive
    records = clmlf_records(published["dev"])
    victim = next(r for r in records if r["emotion_label"] == CLMLF_CODE["positive"])
    victim["emotion_label"] = CLMLF_CODE["neutral"]
    (tmp_path / "random" / "dev.json").write_text(json.dumps(records))
    _, mismatches = official_splits(pairs, "random", tmp_path)
    assert [(m.id, m.file, m.problem) for m in mismatches] == [
        (int(victim["id"]), "random/dev.json", "multimodal_label: published neutral, ours positive")
    ]


def test_official_zhang_requires_text_and_image_to_agree(tmp_path):
    pairs = small_pairs(70)
    agree = pairs[pairs["text_label"] == pairs["image_label"]]
    published = three_way(agree)
    write_zhang(tmp_path / "zhang", published)
    (split,), mismatches = official_splits(pairs, "zhang", tmp_path)
    assert mismatches == []
    assert ids(split.val) == ids(published["dev"])
    assert len(split.train) + len(split.val) + len(split.test) == len(agree)

    # a pair whose multimodal label matches but whose text and image disagree
    intruder = pairs[(pairs["text_label"] == "neutral") & (pairs["image_label"] == "positive")].iloc[[0]]
    published["test"] = pd.concat([published["test"], intruder])
    write_zhang(tmp_path / "zhang", published)
    _, mismatches = official_splits(pairs, "zhang", tmp_path)
    assert [(m.id, m.file, m.problem) for m in mismatches] == [
        (int(intruder["id"].iloc[0]), "zhang/test.jsonl", "text_label: published positive, ours neutral")
    ]


def test_official_refuses_overlapping_parts(tmp_path):
    pairs = small_pairs(30)
    published = three_way(pairs)
    published["test"] = pd.concat([published["test"], published["train"].iloc[[2]]])
    write_random(tmp_path / "random", published)
    with pytest.raises(ValueError, match=r"official random split 1 lists ids \[\d+\] more than once"):
        official_splits(pairs, "random", tmp_path)


@pytest.mark.parametrize("protocol", ["cheema", "random", "zhang"])
def test_missing_official_files_name_fetch_splits_and_the_path(tmp_path, protocol):
    with pytest.raises(FileNotFoundError) as error:
        official_splits(small_pairs(30), protocol, tmp_path / "splits")
    message = str(error.value)
    assert f"llavac fetch-splits {protocol}" in message
    assert str(tmp_path / "splits" / protocol) in message


def test_read_pairs_reads_a_spark_folder_and_checks_columns(tmp_path):
    pairs = small_pairs(20)
    folder = tmp_path / "pairs.parquet"
    folder.mkdir()
    pairs.iloc[10:].to_parquet(folder / "part-00000.parquet", index=False)
    pairs.iloc[:10].to_parquet(folder / "part-00001.parquet", index=False)
    pd.testing.assert_frame_equal(read_pairs(folder), pairs)
    pairs.drop(columns="image_sha256").to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match=r"lacks the columns \['image_sha256'\]"):
        read_pairs(tmp_path / "bad.parquet")


# --- the stage ----------------------------------------------------------------------------------


def write_params(cwd: Path, splits_dir: Path, protocol: str = "cheema", **splits) -> None:
    settings = {"seed": 5, "source": "generated", "dir": str(splits_dir), "allow_mismatches": False} | splits
    write_repo_params(cwd, seed=99, protocol=protocol, splits=settings)  # splits.seed, not the model's seed


def split_stage(run_stage, cwd: Path, pairs: Path, splits_dir: Path, out: Path, **params) -> str | None:
    """The split stage with ``params``; its exit message, None when it succeeds."""
    write_params(cwd, splits_dir, **params)
    return run_stage(cwd, "split.py", pairs, splits_dir, out)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_stage_writes_generated_cheema_splits_and_manifest(tmp_path, run_stage):
    pairs = small_pairs(120)
    pairs_dir = tmp_path / "pairs.parquet"
    pairs_dir.mkdir()
    pairs.iloc[:60].to_parquet(pairs_dir / "part-00000.parquet", index=False)
    pairs.iloc[60:].to_parquet(pairs_dir / "part-00001.parquet", index=False)
    out = tmp_path / "splits_out"
    (out / "11").mkdir(parents=True)  # stale folder of an earlier run

    assert split_stage(run_stage, tmp_path, pairs_dir, tmp_path / "official", out) is None
    assert sorted(p.name for p in out.iterdir()) == sorted([*map(str, range(1, 11)), "manifest.json"])
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["protocol"], manifest["source"], manifest["seed"]) == ("cheema", "generated", 5)
    assert manifest["inputs"] == [
        {"path": str(pairs_dir / name), "sha256": sha256(pairs_dir / name)}
        for name in ("part-00000.parquet", "part-00001.parquet")
    ]
    tested = []
    for number in range(1, 11):
        for part in ("train", "val", "test"):
            frame = pd.read_parquet(out / str(number) / f"{part}.parquet")
            assert list(frame.columns) == list(PAIR_COLUMNS)
            stated = manifest["splits"][str(number)][part]
            assert stated["size"] == len(frame)
            for task in ("multimodal", "text", "image"):
                counts = frame[f"{task}_label"].value_counts()
                assert stated["labels"][task] == {
                    label: int(counts.get(label, 0)) for label in ("negative", "neutral", "positive")
                }
        tested += pd.read_parquet(out / str(number) / "test.parquet")["id"].tolist()
        assert manifest["shape"]["splits"][str(number)] == {
            "disjoint": True,
            "covered": 120,
            "uncovered_ids": [],
            "ineligible_ids": [],
        }
    assert sorted(tested) == pairs["id"].tolist()
    assert manifest["shape"]["test_sets_cover_each_pair_once"] is True
    assert manifest["mismatches"] == []


def test_stage_stops_on_official_mismatches_unless_allowed(tmp_path, run_stage):
    pairs = small_pairs(60)
    pairs_file = tmp_path / "pairs.parquet"
    pairs[pairs["id"] != pairs["id"].iloc[3]].to_parquet(pairs_file, index=False)
    splits_dir = tmp_path / "official"
    write_random(splits_dir / "random", three_way(pairs))
    out = tmp_path / "out"
    absent = int(pairs["id"].iloc[3])

    refused = split_stage(run_stage, tmp_path, pairs_file, splits_dir, out, protocol="random", source="official")
    assert f"between the official random files and {pairs_file} on 1 id(s) ({absent})" in refused
    assert "splits.allow_mismatches=true" in refused
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json"]

    allowed = split_stage(
        run_stage, tmp_path, pairs_file, splits_dir, out, protocol="random", source="official", allow_mismatches=True
    )
    assert allowed is None
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["mismatches"] == [{"id": absent, "file": "random/train.json", "problem": "absent from the pairs"}]
    assert manifest["seed"] is None
    official_inputs = {entry["path"]: entry for entry in manifest["inputs"][1:]}
    assert sorted(official_inputs) == [
        str(splits_dir / "random" / name) for name in ("dev.json", "test.json", "train.json")
    ]
    assert all(
        entry["sha256"] == sha256(Path(path)) and entry["matches_published"] is False
        for path, entry in official_inputs.items()
    )
    assert sum(manifest["splits"]["1"][part]["size"] for part in ("train", "val", "test")) == 59
    assert manifest["splits"]["1"]["val"]["size"] == len(pd.read_parquet(out / "1" / "val.parquet")) == 20


def test_stage_names_allowed_values_and_the_fetch_command(tmp_path, run_stage):
    pairs_file = tmp_path / "pairs.parquet"
    small_pairs(30).to_parquet(pairs_file, index=False)
    args = (run_stage, tmp_path, pairs_file, tmp_path / "official", tmp_path / "out")
    assert "protocol='kfold': Input should be 'cheema', 'random' or 'zhang'" in split_stage(*args, protocol="kfold")
    assert "splits.source='published': Input should be 'generated' or 'official'" in split_stage(*args, source="published")
    missing = split_stage(*args, protocol="zhang", source="official")
    assert missing.startswith("error: the official zhang split files of mvsa-single are missing")
    assert "llavac fetch-splits zhang" in missing


def test_stage_stops_on_an_official_file_that_differs_from_the_published_one(tmp_path, run_stage):
    """Files written here never hash like the published ones: exactly the case of a truncated download."""
    pairs = small_pairs(60)
    pairs_file = tmp_path / "pairs.parquet"
    pairs.to_parquet(pairs_file, index=False)
    splits_dir = tmp_path / "official"
    write_random(splits_dir / "random", three_way(pairs))
    out = tmp_path / "out"
    refused = split_stage(run_stage, tmp_path, pairs_file, splits_dir, out, protocol="random", source="official")
    assert refused.startswith("error: 3 official random file(s) differ from the published ones (SHA-256)")
    assert "llavac fetch-splits random" in refused and "splits.allow_mismatches=true" in refused
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json"]  # the hashes, for the diagnosis; no split
    allowed = split_stage(
        run_stage, tmp_path, pairs_file, splits_dir, out, protocol="random", source="official", allow_mismatches=True
    )
    assert allowed is None and (out / "1" / "test.parquet").is_file()


# --- MVSA-Multiple ----------------------------------------------------------------------------------

# Cheema et al.'s valid_pairlist.txt of MVSA-Multiple (docs/mvsa-multiple.md): 17,025 pairs.
MULTIPLE_COUNTS = {"positive": 11318, "neutral": 4408, "negative": 1299}


def multiple_sized_pairs(drop_one_negative: bool = False) -> pd.DataFrame:
    """Pairs with MVSA-Multiple's multimodal label counts (optionally without one negative pair, like
    id 15324, which CLMLF's files lack), ids 2499.. in a shuffled label order."""
    labels = [label for label, n in MULTIPLE_COUNTS.items() for _ in range(n)]
    if drop_one_negative:
        labels.remove("negative")
    order = np.random.default_rng(11).permutation(len(labels))
    return pairs_table([(labels[k], labels[k]) for k in order], ids=list(range(2499, 2499 + len(labels))))


def test_generated_cheema_splits_of_17025_pairs_have_the_published_sizes():
    pairs = multiple_sized_pairs()
    splits = generated_splits(pairs, "cheema", seed=42)
    sizes = [tuple(len(frame) for frame in split.parts().values()) for split in splits]
    # The published sizes: 13,619/1,703/1,703 and 13,621/1,702/1,702; ten test folds partition the pairs.
    assert set(sizes) == {(13619, 1703, 1703), (13621, 1702, 1702)}
    tested = sorted(pair_id for split in splits for pair_id in split.test["id"])
    assert tested == pairs["id"].tolist()
    for split in splits:
        assert ids(split.train).isdisjoint(ids(split.val) | ids(split.test)) and ids(split.val).isdisjoint(ids(split.test))


@pytest.mark.parametrize(("drop_one_negative", "train"), [(False, 13625), (True, 13624)])
def test_generated_random_split_of_mvsa_multiple_has_clmlfs_sizes(drop_one_negative, train):
    pairs = multiple_sized_pairs(drop_one_negative)
    (split,) = generated_splits(pairs, "random", seed=42)
    # CLMLF: train 13,624, dev 1,700, test 1,700 on its 17,024 pairs; 17,025 keep one more pair in train.
    assert [len(frame) for frame in split.parts().values()] == [train, 1700, 1700]


def test_zhang_on_mvsa_multiple_is_generated_by_qmfs_rule_but_never_read_as_official(tmp_path, run_stage):
    pairs = multiple_sized_pairs().iloc[:600]
    (split,) = generated_splits(pairs, "zhang", seed=1)
    assert all((frame["text_label"] == frame["image_label"]).all() for frame in split.parts().values())
    pairs_file = tmp_path / "pairs.parquet"
    pairs.to_parquet(pairs_file, index=False)
    write_repo_params(tmp_path, dataset="mvsa-multiple", protocol="zhang",
                      splits={"seed": 42, "source": "official", "dir": str(tmp_path / "official"), "allow_mismatches": False})
    message = run_stage(tmp_path, "split.py", pairs_file, tmp_path / "official", tmp_path / "out")
    assert message.startswith("error: zhang has no published split of mvsa-multiple") and "splits.source=generated" in message
    assert not (tmp_path / "out").exists()


def test_official_files_other_than_mvsa_multiples_pinned_ones_are_refused(tmp_path, run_stage):
    pairs = small_pairs(60)
    pairs_file = tmp_path / "pairs.parquet"
    pairs.to_parquet(pairs_file, index=False)
    write_cheema(tmp_path / "official" / "cheema", pairs)
    write_repo_params(tmp_path, dataset="mvsa-multiple", protocol="cheema",
                      splits={"seed": 42, "source": "official", "dir": str(tmp_path / "official"), "allow_mismatches": False})
    message = run_stage(tmp_path, "split.py", pairs_file, tmp_path / "official", tmp_path / "out")
    assert "differ from the published ones" in message and "another dataset's (this is mvsa-multiple)" in message
    assert "--dataset mvsa-multiple" in message
