"""Downloading the published split files: pinned URLs, checksum refusal, skipping, offline message.

Every URL here is a file:// URL to files this test writes; the network is never touched.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pandas as pd
import pytest

from llavac.data import fetch
from llavac.data.fetch import GITHUB_RAW, OFFICIAL_FILES, FetchError, OfficialFile, fetch_splits
from llavac.data.official import official_splits


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def mirror(root: Path) -> str:
    """``root`` as a base URL: files laid out as ``root/<owner>/<repo>/<commit>/<path>``."""
    return root.as_uri() + "/"


def publish(root: Path, official: OfficialFile, data: bytes) -> None:
    path = root / official.source
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_official_files_are_pinned_to_the_published_commits():
    assert [len(OFFICIAL_FILES["mvsa-single"][protocol]) for protocol in ("cheema", "random", "zhang")] == [31, 3, 3]
    cheema = {official.dest: official for official in OFFICIAL_FILES["mvsa-single"]["cheema"]}
    assert set(cheema) == {"cheema/valid_pairlist.txt"} | {
        f"cheema/{part}_{number}.txt" for part in ("train", "val", "test") for number in range(1, 11)
    }
    assert cheema["cheema/test_10.txt"].url() == (
        "https://raw.githubusercontent.com/cleopatra-itn/fair_multimodal_sentiment/"
        "554000945e3ecf084c213c3948773614ee49ef08/data/mvsa_single/splits/test_10.txt"
    )
    assert (
        cheema["cheema/valid_pairlist.txt"].sha256 == "2f6fe91e68fc2f06458780cd2aa4ab3b79414187acc94b3f7d85cab14b435494"
    )
    assert [(f.dest, f.url()) for f in OFFICIAL_FILES["mvsa-single"]["random"]][1] == (
        "random/dev.json",
        GITHUB_RAW
        + "Link-Li/CLMLF/2402ef6211f2f67fe73754bbfa2d1279b5400772/dataset/data/MVSA-single/10-flod-1/dev.json",
    )
    assert [f.dest for f in OFFICIAL_FILES["mvsa-single"]["zhang"]] == ["zhang/train.jsonl", "zhang/dev.jsonl", "zhang/test.jsonl"]
    assert OFFICIAL_FILES["mvsa-single"]["zhang"][2].source.startswith("QingyangZhang/QMF/fe6c4c6ef7cb23f0a89594ee413d485f1854268b/")
    hashes = [official.sha256 for files in OFFICIAL_FILES["mvsa-single"].values() for official in files]
    assert len(set(hashes)) == 37 and all(re.fullmatch("[0-9a-f]{64}", h) for h in hashes)


def test_a_file_with_another_checksum_is_refused_and_not_saved(tmp_path):
    upstream, dest = tmp_path / "upstream", tmp_path / "splits"
    train = OFFICIAL_FILES["mvsa-single"]["random"][0]
    publish(upstream, train, b"[]")
    with pytest.raises(FetchError) as error:
        fetch_splits("random", dest, base_url=mirror(upstream))
    message = str(error.value)
    assert train.url(mirror(upstream)) in message
    assert train.sha256 in message and sha256(b"[]") in message
    assert list((dest / "random").iterdir()) == []  # no target, no leftover temporary file


def test_verified_files_are_saved_then_kept_and_read_by_the_split_stage(tmp_path, monkeypatch):
    upstream, dest = tmp_path / "upstream", tmp_path / "splits"
    pairs = pd.DataFrame(
        {
            "id": pd.Series([11, 12, 13, 14], dtype="int64"),
            "text": "t",
            "text_label": ["positive", "neutral", "negative", "neutral"],
            "image_label": ["positive", "neutral", "negative", "positive"],
            "multimodal_label": ["positive", "neutral", "negative", "positive"],
            "image_path": "data/x.jpg",
            "image_sha256": "0" * 64,
            "image_width": 8,
            "image_height": 8,
        }
    )
    contents = {
        "train": [{"id": "11", "text": "a", "emotion_label": 0}, {"id": "14", "text": "b", "emotion_label": 0}],
        "dev": [{"id": "12", "text": "c", "emotion_label": 1}],
        "test": [{"id": "13", "text": "d", "emotion_label": 2}],
    }
    files = []
    for official, records in zip(OFFICIAL_FILES["mvsa-single"]["random"], contents.values(), strict=True):
        data = json.dumps(records).encode()
        files.append(official._replace(sha256=sha256(data)))
        publish(upstream, official, data)
    monkeypatch.setitem(fetch.OFFICIAL_FILES["mvsa-single"], "random", files)

    paths = fetch_splits("random", dest, base_url=mirror(upstream))

    assert paths == [dest / "random" / name for name in ("train.json", "dev.json", "test.json")]
    assert json.loads(paths[1].read_text()) == contents["dev"]
    (split,), mismatches = official_splits(pairs, "random", dest)
    assert mismatches == []
    assert (split.train["id"].tolist(), split.val["id"].tolist(), split.test["id"].tolist()) == ([11, 14], [12], [13])

    # present and verified: kept without a download (the upstream copy is gone)
    for official in files:
        (upstream / official.source).unlink()
    assert fetch_splits("random", dest, base_url=mirror(upstream)) == paths

    # present but altered: fetched again, and the failure explains how to work offline
    paths[0].write_text("[]")
    with pytest.raises(FetchError, match=r"no network access, run `llavac fetch-splits random --dataset mvsa-single` on a connected machine"):
        fetch_splits("random", dest, base_url=mirror(upstream))
    assert paths[0].read_text() == "[]"


def test_all_protocols_when_none_is_named(tmp_path, monkeypatch):
    upstream, dest = tmp_path / "upstream", tmp_path / "splits"
    for protocol in OFFICIAL_FILES["mvsa-single"]:
        official = OfficialFile(f"owner/{protocol}/0123/file.txt", f"{protocol}/file.txt", sha256(protocol.encode()))
        publish(upstream, official, protocol.encode())
        monkeypatch.setitem(fetch.OFFICIAL_FILES["mvsa-single"], protocol, [official])
    paths = fetch_splits(None, dest, base_url=mirror(upstream))
    assert [path.read_text() for path in paths] == ["cheema", "random", "zhang"]


def test_an_unknown_protocol_names_the_choices(tmp_path):
    with pytest.raises(ValueError, match="unknown split protocol 'kfold'; choose one of: cheema, random, zhang"):
        fetch_splits("kfold", tmp_path)


# --- MVSA-Multiple ---------------------------------------------------------------------------------


def test_mvsa_multiple_files_are_pinned_to_the_same_commits_in_their_own_folders():
    multiple = OFFICIAL_FILES["mvsa-multiple"]
    assert {protocol: len(files) for protocol, files in multiple.items()} == {"cheema": 31, "random": 3}
    cheema = {official.dest: official for official in multiple["cheema"]}
    assert cheema["cheema/valid_pairlist.txt"].url() == (
        "https://raw.githubusercontent.com/cleopatra-itn/fair_multimodal_sentiment/"
        "554000945e3ecf084c213c3948773614ee49ef08/data/mvsa_multiple/valid_pairlist.txt"
    )
    assert cheema["cheema/valid_pairlist.txt"].sha256 == "dd7e8e6569c89d325b3d9c282c12f3900eebbc3bdb5c0579abeee2786cc88e5d"
    assert cheema["cheema/test_10.txt"].sha256 == "d51ece1edec9319a4fdc9bdf3a4b61231776670db03226280e8b2fcd7b974dff"
    assert [(f.dest, f.url()) for f in multiple["random"]][2] == (
        "random/test.json",
        "https://raw.githubusercontent.com/Link-Li/CLMLF/2402ef6211f2f67fe73754bbfa2d1279b5400772/"
        "dataset/data/MVSA-multiple/10-flod-1/test.json",
    )
    single = {official.sha256 for files in OFFICIAL_FILES["mvsa-single"].values() for official in files}
    both = [official.sha256 for files in multiple.values() for official in files]
    assert len(set(both)) == 34 and not single & set(both)


def test_fetching_mvsa_multiple_takes_its_own_files(tmp_path, monkeypatch):
    upstream, dest = tmp_path / "upstream", tmp_path / "splits-mvsa-multiple"
    for protocol in ("cheema", "random"):
        data = f"multiple {protocol}".encode()
        official = OfficialFile(f"owner/{protocol}/0123/mvsa_multiple.txt", f"{protocol}/file.txt", sha256(data))
        publish(upstream, official, data)
        monkeypatch.setitem(fetch.OFFICIAL_FILES["mvsa-multiple"], protocol, [official])
    paths = fetch_splits(None, dest, base_url=mirror(upstream), dataset="mvsa-multiple")
    assert [path.read_text() for path in paths] == ["multiple cheema", "multiple random"]


def test_qmf_publishes_no_mvsa_multiple_split_and_fetch_says_what_to_do(tmp_path):
    with pytest.raises(ValueError, match=r"zhang has no published split of mvsa-multiple.*splits.source=generated"):
        fetch_splits("zhang", tmp_path, dataset="mvsa-multiple")
    with pytest.raises(ValueError, match="unknown dataset 'twitter15'"):
        fetch_splits(None, tmp_path, dataset="twitter15")
    assert list(tmp_path.iterdir()) == []
