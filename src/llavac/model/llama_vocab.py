"""The real LLaMA / Vicuna SentencePiece vocabulary, rebuilt offline from a file on the package index.

No model hub is reachable from our machines, but llama.cpp vendors the LLaMA vocabulary as a GGUF
file, with reference encodings made by the original tokenizer, and `llama-cpp-python`'s source
distribution on the package index carries them. This module downloads that sdist once with pip
(pinned version and SHA-256), rebuilds a SentencePiece `tokenizer.model` from the GGUF, checks it
against every reference encoding, and caches the result. LLaVA-1.5-7B uses exactly this vocabulary,
so a tiny model that carries it is fed exactly the ids the 7B model would be.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from llavac.data.fetch import file_sha256
from llavac.files import write_json
from llavac.model.tokens import SENTENCEPIECE_FILE

SDIST_REQUIREMENT = "llama-cpp-python==0.3.36"
SDIST_FILE = "llama_cpp_python-0.3.36.tar.gz"
SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
GGUF_MEMBER = "llama_cpp_python-0.3.36/vendor/llama.cpp/models/ggml-vocab-llama-spm.gguf"
GGUF_SHA256 = "16c3724582d59aa8bf84711894e833f916ee46a31d80e21312759c48bf8d0e69"
TEST_SEPARATOR = "\n__ggml_vocab_test__\n"
REFERENCE_FILE = "reference_encodings.json"
VOCAB_SIZE = 32000


class VocabularyError(RuntimeError):
    """The vocabulary could not be fetched or does not reproduce its reference encodings."""


def cache_root() -> Path:
    """Where fetched files live: ``$LLAVAC_CACHE``, else ``$XDG_CACHE_HOME/llavac`` (``~/.cache/llavac``)."""
    if "LLAVAC_CACHE" in os.environ:
        return Path(os.environ["LLAVAC_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "llavac"


def download_sdist(dest: Path) -> Path:
    """``pip download`` the pinned sdist into `dest` (not installed: only three small files are used)."""
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
               "--no-deps", "--no-binary", ":all:", SDIST_REQUIREMENT, "-d", str(dest)]
    result = subprocess.run(command, capture_output=True, text=True)
    archive = dest / SDIST_FILE
    if result.returncode != 0 or not archive.exists():
        raise VocabularyError(
            f"cannot download {SDIST_REQUIREMENT} from the package index ({result.stderr.strip()[-300:]}). "
            f"Check that pip can reach its index, or put {SDIST_FILE} (SHA-256 {SDIST_SHA256}) into {dest} by hand."
        )
    return archive


def extract_vocab_files(archive: Path, dest: Path) -> Path:
    """The GGUF vocabulary and its `.inp`/`.out` reference files out of the verified sdist."""
    if file_sha256(archive) != SDIST_SHA256:
        raise VocabularyError(f"{archive} does not have the pinned SHA-256 {SDIST_SHA256}: delete it and retry")
    with tarfile.open(archive) as tar:
        for suffix in ("", ".inp", ".out"):
            member = tar.getmember(GGUF_MEMBER + suffix)
            with tar.extractfile(member) as source, open(dest / Path(member.name).name, "wb") as target:  # type: ignore[union-attr]
                shutil.copyfileobj(source, target)
    gguf_path = dest / Path(GGUF_MEMBER).name
    if file_sha256(gguf_path) != GGUF_SHA256:
        raise VocabularyError(f"{gguf_path} does not have the pinned SHA-256 {GGUF_SHA256}")
    return gguf_path


def sentencepiece_model(gguf_path: Path) -> bytes:
    """A serialized SentencePiece BPE model with the GGUF's pieces, scores and types, and LLaMA's settings."""
    from gguf import GGUFReader
    from sentencepiece import sentencepiece_model_pb2 as spm

    fields = GGUFReader(gguf_path).fields
    pieces = fields["tokenizer.ggml.tokens"].contents()
    scores = fields["tokenizer.ggml.scores"].contents()
    types = fields["tokenizer.ggml.token_type"].contents()
    # GGUF token types 1 normal, 2 unknown, 3 control, 6 byte -> SentencePiece's enum.
    kinds = {1: spm.ModelProto.SentencePiece.NORMAL, 2: spm.ModelProto.SentencePiece.UNKNOWN,
             3: spm.ModelProto.SentencePiece.CONTROL, 6: spm.ModelProto.SentencePiece.BYTE}
    model = spm.ModelProto()
    for piece, score, kind in zip(pieces, scores, types, strict=True):
        model.pieces.add(piece=piece, score=score, type=kinds[kind])
    spec = model.trainer_spec
    spec.model_type = spm.TrainerSpec.BPE
    spec.vocab_size = len(pieces)
    spec.byte_fallback = True
    spec.unk_id, spec.bos_id, spec.eos_id, spec.pad_id = 0, 1, 2, -1
    spec.split_digits = True
    spec.allow_whitespace_only_pieces = True
    normalizer = model.normalizer_spec
    normalizer.name = "identity"
    normalizer.add_dummy_prefix = True
    normalizer.remove_extra_whitespaces = False
    normalizer.escape_whitespaces = True
    return model.SerializeToString()


def reference_encodings(folder: Path) -> list[tuple[str, list[int]]]:
    """llama.cpp's test strings and the ids the original LLaMA tokenizer gave them (no BOS)."""
    name = Path(GGUF_MEMBER).name
    texts = (folder / f"{name}.inp").read_text(encoding="utf-8").split(TEST_SEPARATOR)
    if texts and texts[-1] == "":
        texts.pop()
    lines = (folder / f"{name}.out").read_text(encoding="utf-8").split("\n")[: len(texts)]
    return [(text, [int(i) for i in line.split()]) for text, line in zip(texts, lines, strict=True)]


def check_model(model_file: Path, cases: list[tuple[str, list[int]]]) -> None:
    """Raise unless the model encodes every reference text to its reference ids."""
    import sentencepiece

    processor = sentencepiece.SentencePieceProcessor(model_file=str(model_file))
    wrong = [text for text, ids in cases if processor.encode(text) != ids]
    if processor.get_piece_size() != VOCAB_SIZE or wrong or not cases:
        raise VocabularyError(
            f"the rebuilt LLaMA vocabulary {model_file} reproduces {len(cases) - len(wrong)} of {len(cases)} "
            f"reference encodings (first wrong: {wrong[:1]!r}); delete {model_file.parent} and retry"
        )


def llama_tokenizer_model(cache: Path | None = None) -> Path:
    """The path of the LLaMA `tokenizer.model`, built and verified on first use, then read from the cache."""
    folder = (cache or cache_root()) / "llama-spm"
    model_file = folder / SENTENCEPIECE_FILE
    if model_file.exists():
        return model_file
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent) as scratch:
        work = Path(scratch)
        archive = folder.parent / SDIST_FILE
        if not archive.exists():
            shutil.move(download_sdist(work), archive)
        gguf_path = extract_vocab_files(archive, work)
        cases = reference_encodings(work)
        staged = work / "llama-spm"
        staged.mkdir()
        (staged / SENTENCEPIECE_FILE).write_bytes(sentencepiece_model(gguf_path))
        check_model(staged / SENTENCEPIECE_FILE, cases)
        write_json(staged / REFERENCE_FILE, cases, indent=None, ensure_ascii=False)
        staged.rename(folder)  # atomic: a half-built folder is never seen as the cache
    archive.unlink()  # 77 MB that served its purpose
    return model_file


def llama_reference_encodings(cache: Path | None = None) -> list[tuple[str, list[int]]]:
    """The reference (text, ids) pairs stored beside the cached model."""
    folder = llama_tokenizer_model(cache).parent
    return [(text, ids) for text, ids in json.loads((folder / REFERENCE_FILE).read_text(encoding="utf-8"))]
