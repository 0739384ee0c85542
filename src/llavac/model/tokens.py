"""The token ids the LLaVA repository feeds its model, built by the LLaVA repository's rules.

LLaVA never tokenizes a whole conversation in one call. `tokenizer_image_token` splits the string on
``<image>``, tokenizes every chunk on its own with the slow SentencePiece tokenizer (so each chunk
starts with SentencePiece's dummy-prefix ``▁``), keeps the ``<s>`` of the first chunk only, and puts
the image between chunks. A llava-hf processor instead tokenizes the whole string with the fast
tokenizer: it drops the ``▁`` after the image block on every record, and it splits runs of spaces
differently from SentencePiece. So the ids are built here, chunk by chunk, and only the image
processor of the llava-hf processor is used.

Every model here ships a SentencePiece model (`tokenizer.model`: LLaMA/Vicuna, hence LLaVA-1.5, and the
built models' vocabulary), and it is run through SentencePiece itself.
"""

from __future__ import annotations

import re
from pathlib import Path

from llavac.prompt import IMAGE_TOKEN

SENTENCEPIECE_FILE = "tokenizer.model"


class SentencePieceEncoder:
    """LLaVA's slow `LlamaTokenizer(legacy=False)` on one chunk, reproduced with SentencePiece itself.

    The slow tokenizer first splits the text on its special tokens (``<unk>``, ``<s>``, ``</s>``:
    ``"answer</s>"`` ends in the EOS id, not in the characters), then SentencePiece encodes the text
    before the first special token with the dummy-prefix ``▁`` and the text after a special token
    without it (that is what ``legacy=False`` means).
    """

    rule = "sentencepiece"

    def __init__(self, model_file: Path) -> None:
        import sentencepiece
        from sentencepiece import sentencepiece_model_pb2

        self.model_file = model_file
        self.with_prefix = sentencepiece.SentencePieceProcessor(model_file=str(model_file))
        proto = sentencepiece_model_pb2.ModelProto()
        proto.ParseFromString(model_file.read_bytes())
        proto.normalizer_spec.add_dummy_prefix = False
        self.without_prefix = sentencepiece.SentencePieceProcessor(model_proto=proto.SerializeToString())
        sp = self.with_prefix
        self.bos_id, self.eos_id = sp.bos_id(), sp.eos_id()
        self.specials = {sp.id_to_piece(i): i for i in (sp.unk_id(), sp.bos_id(), sp.eos_id()) if i >= 0}
        self.split_pattern = re.compile("(" + "|".join(map(re.escape, self.specials)) + ")")

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for index, segment in enumerate(self.split_pattern.split(text)):
            if index % 2:  # re.split puts the separators at odd positions
                ids.append(self.specials[segment])
            elif segment:
                processor = self.with_prefix if index == 0 else self.without_prefix
                ids.extend(processor.encode(segment))
        return ids


def image_prompt_ids(encoder: SentencePieceEncoder, text: str, image_token_id: int, n_image_tokens: int) -> list[int]:
    """`tokenizer_image_token` with the image expanded: BOS, chunk, image positions, chunk, ...

    LLaVA puts one placeholder between chunks and replaces it by the image features in the model;
    llava-hf's model expects `n_image_tokens` copies of its image token id in the same place.
    """
    ids = [encoder.bos_id]
    for index, chunk in enumerate(text.split(IMAGE_TOKEN)):
        if index:
            ids.extend([image_token_id] * n_image_tokens)
        ids.extend(encoder.encode(chunk))
    return ids
