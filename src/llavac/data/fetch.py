"""Download the published split files of MVSA-Single's three protocols and MVSA-Multiple's two, verified by SHA-256.

The files are public data that must not be committed; each researcher fetches them once into one
folder per dataset (``splits.dir``: ``data/splits`` for MVSA-Single, ``data/splits-mvsa-multiple``
for MVSA-Multiple, each with the same ``<protocol>/`` layout), where the ``split`` stage reads them
with ``splits.source=official``.
Every file is pinned to a commit of its authors' public repository and a checksum (``_RELEASES``
below), so a moved branch or an edited file is refused instead of silently changing the benchmark.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath
from typing import NamedTuple

log = logging.getLogger(__name__)

GITHUB_RAW = "https://raw.githubusercontent.com/"


class OfficialFile(NamedTuple):
    """One published file: where it lives upstream, where it goes under ``dest``, its checksum."""

    source: str
    """``<owner>/<repo>/<commit>/<path>``, relative to a raw-file host such as :data:`GITHUB_RAW`."""
    dest: str
    """``<protocol>/<original file name>``, relative to the splits folder."""
    sha256: str

    def url(self, base_url: str = GITHUB_RAW) -> str:
        return base_url + self.source


class _Release(NamedTuple):
    repo: str
    commit: str
    folder: str
    sha256: dict[str, str]
    """Path under ``folder`` -> SHA-256."""


CHEEMA_REPO = ("cleopatra-itn/fair_multimodal_sentiment", "554000945e3ecf084c213c3948773614ee49ef08")
CLMLF_REPO = ("Link-Li/CLMLF", "2402ef6211f2f67fe73754bbfa2d1279b5400772")

_SINGLE: dict[str, _Release] = {
    # Cheema et al. 2021: 10 stratified splits as row indices into valid_pairlist.txt.
    "cheema": _Release(
        *CHEEMA_REPO,
        "data/mvsa_single",
        {
            "valid_pairlist.txt": "2f6fe91e68fc2f06458780cd2aa4ab3b79414187acc94b3f7d85cab14b435494",
            "splits/train_1.txt": "705e5d1bfa9e530c7420d87f5d01ddd4fdbadd8f26aec9b76efc7ec2cb27c9d9",
            "splits/train_2.txt": "1b476b0f75f5451da59e24d2e6ac9f16c3830fd09b67462d069cb14c956f3266",
            "splits/train_3.txt": "6ec44e21755ba9b4dd82af909d06f380f6b1b0c1db5ef7becf88156f59521858",
            "splits/train_4.txt": "2a9614fcbbe0b8597ed28f3c613ba4e930b1b8f0c48897e085d9b0ce0031089a",
            "splits/train_5.txt": "4be0c5ffad9111309111fac49e18cb4aa125b1ddd712297002339077674fd4eb",
            "splits/train_6.txt": "d886246a9f83f51a35e8b627ad6d033173b89552b7f82fc1d9236e4ee7ffda77",
            "splits/train_7.txt": "3e041bb3a5bc2158ef5bc3bc29570f7caa695fc43bb52f6b59af33cfc6ea50f3",
            "splits/train_8.txt": "610816674d1d4b8d43cb5e083b39d94e42b4b1bcbcb65e592fa71ff5d8d06e77",
            "splits/train_9.txt": "0b42b16b01026b0019fa065500b3149edf6b96d1d9790a3e91a0c0c7a2c04e9b",
            "splits/train_10.txt": "d53cc86b3cbe2574bd3c0460f79cff98a57e578b5a5fb007fc97f39e0ab3fc0b",
            "splits/val_1.txt": "710c697715f6151d062efe60ccd548896aacda0eddda99dc64700b8efb433858",
            "splits/val_2.txt": "e83d4b068560145bc0fa5bcab9b301d2d3d84ace620baee26ba4702fecae4b40",
            "splits/val_3.txt": "f626349ff96fb191ab09f9dd1d2f5ff698a1989f52cade8b6b0074bce00bab88",
            "splits/val_4.txt": "fad7d3b15f51931b67df8bb421108f0e3376ee4f112ed200fc8e1942c20d5a7c",
            "splits/val_5.txt": "37c06d9f56bb1fe9098170fb647d473f9497ac3564cb286cefa86aaf1f6f6134",
            "splits/val_6.txt": "feafc51cfa91a63383d7a32cff51753fd1576ff9540c2f37b11e4f595b7f174b",
            "splits/val_7.txt": "be4915afe231d935abbc4b0a4901f43e99d2c6ac39a7f53a744bf7845d700593",
            "splits/val_8.txt": "dd32ed869e1a0990c036f5b59143e618f11d72d96761e02f5da3204f218b3851",
            "splits/val_9.txt": "411b758197193c85967db87fb8037c86aa5466698724f422906e28af2ce47b73",
            "splits/val_10.txt": "db040c1946376a407ff0675cecdb9c43783b8d9c240aa3c3cc296738bc86e53b",
            "splits/test_1.txt": "cc4737ff02782823040186d21ec3831eab212d6fae61a7b68e64676df3046a40",
            "splits/test_2.txt": "181366a331e3f53a8275bf831d7f9cff97ccdc0303be164c2c14c8f7931e9aa8",
            "splits/test_3.txt": "0f707ba10f3ae802e73d7b96ea02da3fbf8ea38bff6f7a64a26112a7d3f40d4e",
            "splits/test_4.txt": "c9e96d5538615b04e32a8d07304f330c80358d567d54a10765cc306361481688",
            "splits/test_5.txt": "a6b421dba8672f1e8de0d5210ba9a0dad447b5742214ddfbd912b58d9c081ca8",
            "splits/test_6.txt": "8a4b10876b61e0267649606ee4d0f29893ddc83e0e9bfee9a8af3aee877c2141",
            "splits/test_7.txt": "4e3a789b78144ef4e7d4a015d5d25a8d650aefc679f3ba3edf48ae20ed4e1d6d",
            "splits/test_8.txt": "e4b55e3b74b381280176878747058915e2771fce9a10c59793b833cf96d06bfe",
            "splits/test_9.txt": "a042bee92e90929fe41c8bd927b75e97f039e16047b9843f230077cbfcd7bc6d",
            "splits/test_10.txt": "5442253fc5b939bf33175a658455faea408d083da60f47a74f65cc8b06886631",
        },
    ),
    # CLMLF's single 8:1:1 split (the folder name really is spelled "flod").
    "random": _Release(
        *CLMLF_REPO,
        "dataset/data/MVSA-single/10-flod-1",
        {
            "train.json": "c022f1ec7801de493d6dfcdaf045fbab0d671af451ce655d85c99e2d5f23c0d9",
            "dev.json": "7e833786abdf6991714dbce4d7e4f84dbff1b357b72fa05d2b0d59d6faf96b59",
            "test.json": "7dabdde2d28a94b92da3448cb6bdd50c57df0481b405c75c823b6aaa692a23b4",
        },
    ),
    # QMF's split of the 2592 pairs whose text and image labels agree.
    "zhang": _Release(
        "QingyangZhang/QMF",
        "fe6c4c6ef7cb23f0a89594ee413d485f1854268b",
        "text-image-classification/datasets/MVSA_Single",
        {
            "train.jsonl": "48f04ea3c9ddc2e29ced7df1819ec8b94f2667cf19a093a02ba262b123533793",
            "dev.jsonl": "b28b9022a2185dc7f18874ff04c0c62a8a6e48538c7cacf1bc46697544059aad",
            "test.jsonl": "761af22f83c0fc9343eeba7bc903cc8975ab7280d87e035169d530edf973e1c7",
        },
    ),
}

# MVSA-Multiple: the same two repositories and commits; QMF publishes no MVSA-Multiple split.
_MULTIPLE: dict[str, _Release] = {
    "cheema": _Release(
        *CHEEMA_REPO,
        "data/mvsa_multiple",
        {
            "valid_pairlist.txt": "dd7e8e6569c89d325b3d9c282c12f3900eebbc3bdb5c0579abeee2786cc88e5d",
            "splits/train_1.txt": "89f4b2b0c9542a59259aed16770832bd9c6b900f2fa2f2755ecc0f4464fa990f",
            "splits/train_2.txt": "a4669511a3f54d19ffb35a41a6b3adc703533e7be60a133efc4bac16ee33130f",
            "splits/train_3.txt": "f016f1a7202425ff73e6dd741af8d5c772f84a8888b211bb62935cc4169c72e0",
            "splits/train_4.txt": "538b3fb1d5fe118e1e6a53012ea85b417efcd5456b8fdca06331bcbad6e5b754",
            "splits/train_5.txt": "0efe81de45dd369f9b7ab03e4dbb11faa7f0087b4c38e16ae56873a44a719ede",
            "splits/train_6.txt": "2b56e74fadf1dc2a14b651e3db34fe7819c068684305ddedbb3f388663b24f0e",
            "splits/train_7.txt": "56ad811ba2e1bdea316535c70c18357ec220834d95af89c0ad3bb9b6cf88ad10",
            "splits/train_8.txt": "8a558f5a54a13205945b08a4d8db5e003df0b2c409556d36d9b54e554197bb9c",
            "splits/train_9.txt": "58f7a9e1e719bb3c71b261b9c8ed4e325e478bbd690ea7486e48a1ba8917d409",
            "splits/train_10.txt": "93c02349fe887f8e29a15ff381285df1ca131381cf27c80018d6a9cacd024ca1",
            "splits/val_1.txt": "0c18841303d52baca77daa16cfcecb35a205c0d0158bab57a71ee02e241720e9",
            "splits/val_2.txt": "5897a66f76b9dfe1d0bf9387de2ed64bfc393ff51a450437eaa3dd5a44303e7a",
            "splits/val_3.txt": "c1910d06783599a284182f27bd76170f2350b3b9d021e02a3fdd074436095654",
            "splits/val_4.txt": "439c310d17a1fd88b9b32e8cbb9a63665e5064e3a007ef792a8f7ef263a461ac",
            "splits/val_5.txt": "c412d2320f9723e78c15f47a476e4065da6db7bb61e5398cced63935aca12d6f",
            "splits/val_6.txt": "2908ded1c02e3f887083fb7f0db498afac97c47477b3d7e60da17fdee2a5f627",
            "splits/val_7.txt": "3ab4c8a3a67ae75c71e7485c970777777fcd55ebcd39831e320e1d5772ae2d83",
            "splits/val_8.txt": "e773cc3a31f6b80b6b98eda36f29faf0f0596a416613b1ef7cc4e55876a99e5f",
            "splits/val_9.txt": "4e3474118e8027b8f2920e2138febeb63bb67c95845a16335bf9e44ede758432",
            "splits/val_10.txt": "38439b830c2a7290043e5cf692dbf577841ad88be746d71c39d015d99973652a",
            "splits/test_1.txt": "ad65d99f66de21e7dab32d52f35fd69af89ddf67c5f113982570cf707fbe439e",
            "splits/test_2.txt": "ef2838064a5265fa8307a4082cfcb330344a599e741d084aea3c8dc3629f41a2",
            "splits/test_3.txt": "c85bb7dbf6316beb24aee8af956666deed3b104244f0b049f5cc79ef39a4a787",
            "splits/test_4.txt": "4b8b880f76ff402e13a5a213205c34e46fdce6080dc877a8b18d582ca8d0c801",
            "splits/test_5.txt": "be8d0cf8bdd24051b119e6382f207a2d1b413f2bf9055bef5b8dc6d4fb8dc9be",
            "splits/test_6.txt": "a6efb3b9fd09be93b9f8ef7929bb7a58b83395624be81b6b497a32fbeae50f2c",
            "splits/test_7.txt": "d568f0db3558071735def9d57e80916a01057e966f008f3910420a8f1571503d",
            "splits/test_8.txt": "74e71910f546463ce9db7fb54f12ef6138020eb95dd633d5eadeb53912256ec8",
            "splits/test_9.txt": "37f23d37d66a861a321efe9d62339f5811baff602c92d185a42a5f129de75f9e",
            "splits/test_10.txt": "d51ece1edec9319a4fdc9bdf3a4b61231776670db03226280e8b2fcd7b974dff",
        },
    ),
    # CLMLF's split of MVSA-Multiple (beside it, train-copy.json and MVSA-multiple_translation.json are not the split).
    "random": _Release(
        *CLMLF_REPO,
        "dataset/data/MVSA-multiple/10-flod-1",
        {
            "train.json": "e477b2e74d9f91c6fe901ddfc1efb6f0cd88d9bcaa70f69080b31c8e8e6b3867",
            "dev.json": "6e008e7b795484be32a7f6ffd49aa1dc34283417f7119afda6c51d755609245b",
            "test.json": "dc54b497924f0e32c1c84127a3fcc85d544d1b8e372400d2922c818541072e39",
        },
    ),
}


def _files(releases: dict[str, _Release]) -> dict[str, list[OfficialFile]]:
    return {
        protocol: [
            OfficialFile(
                source=f"{release.repo}/{release.commit}/{release.folder}/{path}",
                dest=f"{protocol}/{PurePosixPath(path).name}",
                sha256=sha256,
            )
            for path, sha256 in release.sha256.items()
        ]
        for protocol, release in releases.items()
    }


OFFICIAL_FILES: dict[str, dict[str, list[OfficialFile]]] = {
    "mvsa-single": _files(_SINGLE),
    "mvsa-multiple": _files(_MULTIPLE),
}
"""Per dataset and protocol, every published file the ``split`` stage reads, under its original file name."""

DEFAULT_DEST: dict[str, str] = {"mvsa-single": "data/splits", "mvsa-multiple": "data/splits-mvsa-multiple"}
"""Where ``llavac fetch-splits`` puts each dataset's files unless told otherwise: one folder per
dataset, since both datasets' files have the same names."""


def unpublished(dataset: str, protocol: str) -> str | None:
    """Why ``protocol`` has no published files for ``dataset`` (what to do instead), or None."""
    if protocol in OFFICIAL_FILES[dataset]:
        return None
    published = ", ".join(OFFICIAL_FILES[dataset])
    return (
        f"{protocol} has no published split of {dataset} (its authors publish none; published: {published}); "
        f"set splits.source=generated to draw it by the protocol's rule with the seed"
    )


class FetchError(RuntimeError):
    """A download failed or delivered other bytes than the pinned ones; the message says what to do."""


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks (split files and Parquet parts alike)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def fetch_splits(
    protocol: str | None, dest: Path, base_url: str = GITHUB_RAW, dataset: str = "mvsa-single"
) -> list[Path]:
    """Download ``dataset``'s official split files of ``protocol`` (all its protocols if None) into ``dest``.

    Files already present with the pinned checksum are kept, so the command can be re-run after a
    partial download. Each file is written to a temporary file next to its target and moved into
    place only once its checksum matches: a failed or tampered download never leaves a file that
    the ``split`` stage would read. ``base_url`` replaces the GitHub raw host (a mirror, or
    ``file://`` URLs in tests). Returns the paths of all files of the protocol(s). Raises ValueError
    for an unknown dataset or protocol, or one without published files (QMF's on MVSA-Multiple).
    """
    if dataset not in OFFICIAL_FILES:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of: {', '.join(OFFICIAL_FILES)}")
    known = {name for files in OFFICIAL_FILES.values() for name in files}
    if protocol is not None and protocol not in known:
        raise ValueError(f"unknown split protocol {protocol!r}; choose one of: {', '.join(sorted(known))}")
    if protocol is not None and (reason := unpublished(dataset, protocol)):
        raise ValueError(reason)
    releases = OFFICIAL_FILES[dataset]
    protocols = list(releases) if protocol is None else [protocol]
    paths = []
    for name in protocols:
        for official in releases[name]:
            target = dest / official.dest
            if target.is_file() and file_sha256(target) == official.sha256:
                log.info("kept %s (checksum ok)", target)
            else:
                _download(official, base_url, dest, dataset)
                log.info("downloaded %s", target)
            paths.append(target)
    return paths


def _download(official: OfficialFile, base_url: str, dest: Path, dataset: str) -> None:
    """Stream one file into place via a temporary file, refusing any checksum but the pinned one."""
    url, target = official.url(base_url), dest / official.dest
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        actual = digest.hexdigest()
        if actual != official.sha256:
            raise FetchError(
                f"checksum mismatch for {url}: expected sha256 {official.sha256}, got {actual}; "
                "the file was not saved. The pinned commit never changes, so check the URL or the mirror."
            )
        os.replace(tmp, target)
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        protocol = PurePosixPath(official.dest).parts[0]
        raise FetchError(
            f"could not download {url} ({exc}). If this machine has no network access, run "
            f"`llavac fetch-splits {protocol} --dataset {dataset}` on a connected machine and copy the {protocol}/ "
            f"folder it writes into {dest}/."
        ) from exc
    finally:
        tmp.unlink(missing_ok=True)
