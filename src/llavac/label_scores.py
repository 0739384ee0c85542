"""The probability of every answer the template allows, from one prefill and one tree-shaped step.

The answer is ``"{text}, {image}, {multimodal}</s>"`` with a label word in each slot: 27 token
sequences that share most of their prefixes. After the prompt's prefill (whose last logits already
score every first token), all the answers' prefixes go through the model in *one* more forward pass
over the KV cache, laid out as a tree: each prefix node attends to the prompt and to its own ancestors
only, at the position it would have in its own sequence. With one-token labels (LLaMA's vocabulary)
that is 51 extra tokens per pair instead of 27 sequences of 6, and nothing is copied per answer.

The answers' token ids come from the project's own training rule (`LlavaInputs.training_ids`): the
ids of the record with that answer minus the prompt's ids, so they hold for any tokenizer, whether it
keeps a label word in one token or splits it.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.special import logsumexp, softmax

from llavac.labels import LABELS, TASKS
from llavac.model.inputs import LlavaInputs
from llavac.prompt import answer

Triple = tuple[str, str, str]

TRIPLES: tuple[Triple, ...] = tuple(itertools.product(LABELS, repeat=3))  # type: ignore[assignment]
"""Every (text, image, multimodal) answer, in a fixed order: the axis of every joint distribution."""


def answer_continuations(inputs: LlavaInputs, human: str, n_image_tokens: int) -> list[list[int]]:
    """The ids each of the 27 answers adds after the prompt (``</s>`` included), in `TRIPLES` order.

    They are what training teaches the model to produce after exactly the prompt that generation
    feeds it, so scoring and generation see the same ids.
    """
    prompt = inputs.prompt_ids(human, n_image_tokens)
    continuations = []
    for triple in TRIPLES:
        ids, _ = inputs.training_ids(human, answer(*triple), n_image_tokens)
        if ids[: len(prompt)] != prompt:
            raise ValueError(
                "the generation prompt's ids are not a prefix of the ids of prompt + answer for this tokenizer, "
                "so the answers cannot be scored as continuations of the prompt"
            )
        continuations.append(ids[len(prompt) :])
    return continuations


def record_continuations(
    inputs: LlavaInputs, human: str, n_image_tokens: int, known: list[list[int]] | None
) -> list[list[int]]:
    """`answer_continuations` of one record, reusing `known` (another record's) when they hold here too.

    The answer's ids follow the prompt's fixed ending (``ASSISTANT:``), so for a tokenizer that does not
    merge across it they are the same for every tweet. One answer's ids confirm it (3 encodings of the
    record instead of 54); a record where they differ gets its own, computed in full.
    """
    if known is not None:
        ids, _ = inputs.training_ids(human, answer(*TRIPLES[0]), n_image_tokens)
        cut = len(ids) - len(known[0])
        if cut > 0 and ids[cut:] == known[0] and ids[:cut] == inputs.prompt_ids(human, n_image_tokens):
            return known
    return answer_continuations(inputs, human, n_image_tokens)


@dataclass(frozen=True)
class AnswerTree:
    """The 27 answers' shared-prefix tree, flattened for one forward step.

    `tokens[n]` is the last token of prefix node `n` (every proper, non-empty prefix of an answer),
    `depths[n]` its length, and `ancestry[n, m]` says whether node `m` is `n` or one of its ancestors
    (what `n` may attend to). Answer `a`'s `k`-th token is `answer_tokens[a, k]`, scored by the logits
    at line `lines[a, k]`: 0 for the prompt's last position, `n + 1` for node `n`; `real` marks the
    entries that are not padding (answers can differ in length).
    """

    tokens: list[int]
    depths: list[int]
    ancestry: torch.Tensor
    lines: torch.Tensor
    answer_tokens: torch.Tensor
    real: torch.Tensor

    @classmethod
    def of(cls, continuations: Sequence[Sequence[int]]) -> AnswerTree:
        node_of: dict[tuple[int, ...], int] = {}
        tokens: list[int] = []
        depths: list[int] = []
        parents: list[int] = []
        lines = []
        for ids in continuations:
            for k in range(len(ids) - 1):  # the last token (</s>) scores nothing: it is never fed
                if tuple(ids[: k + 1]) not in node_of:
                    node_of[tuple(ids[: k + 1])] = len(tokens)
                    tokens.append(ids[k])
                    depths.append(k + 1)
                    parents.append(node_of[tuple(ids[:k])] if k else -1)
            lines.append([node_of[tuple(ids[:k])] + 1 if k else 0 for k in range(len(ids))])
        ancestry = torch.eye(len(tokens), dtype=torch.bool)
        for node, parent in enumerate(parents):
            if parent >= 0:
                ancestry[node] |= ancestry[parent]  # a parent precedes its children
        width = max(len(ids) for ids in continuations)
        return cls(
            tokens=tokens,
            depths=depths,
            ancestry=ancestry,
            lines=torch.tensor([row + [0] * (width - len(row)) for row in lines]),
            answer_tokens=torch.tensor([[*ids] + [0] * (width - len(ids)) for ids in continuations]),
            real=torch.tensor([[True] * len(ids) + [False] * (width - len(ids)) for ids in continuations]),
        )


@dataclass(frozen=True)
class LabelScores:
    """One pair's distribution over the 27 answers, and what follows from it.

    `answer_logprobs` are log p(answer | prompt) under the model (the tokens it must not generate
    suppressed, as in generation); the joint renormalises them over the template's answers.
    `greedy` is the answer greedy decoding gives when it may only follow the template: token by
    token, the most probable next token among the answers still possible. It equals the generated
    answer whenever that is one of the 27 (a test checks it), which ties these scores to `generate`.
    """

    answer_logprobs: np.ndarray
    greedy: Triple

    @property
    def joint(self) -> np.ndarray:
        """p(text, image, multimodal) over `TRIPLES`, summing to 1."""
        return softmax(self.answer_logprobs)

    @property
    def template_mass(self) -> float:
        """The probability that the model's answer is one of the 27 at all (before renormalising)."""
        return float(np.exp(logsumexp(self.answer_logprobs)))

    @property
    def best(self) -> Triple:
        """The most probable answer: what `score` mode predicts; never invalid."""
        return TRIPLES[int(np.argmax(self.answer_logprobs))]

    def marginal(self, task: str) -> dict[str, float]:
        """p(label) of one of `TASKS`, the joint summed over the other two slots."""
        slot = TASKS.index(task)
        joint = self.joint
        return {label: float(sum(p for p, t in zip(joint, TRIPLES, strict=True) if t[slot] == label)) for label in LABELS}

    def row(self) -> dict[str, Any]:
        """The fields a prediction row carries: marginals, the joint, the most probable answer and its probability."""
        joint = self.joint
        return {
            **{f"p_{task}": self.marginal(task) for task in TASKS},
            "p_answers": {answer(*t): float(p) for t, p in zip(TRIPLES, joint, strict=True)},
            "best_answer": answer(*self.best),
            "p_best_answer": float(joint.max()),
            "template_mass": self.template_mass,
        }


def _greedy(tree: AnswerTree, token_logprobs: torch.Tensor) -> Triple:
    """Follow the tree from the prompt, taking the most probable allowed token at each step.

    `token_logprobs[a, k]` is the log-probability of answer `a`'s `k`-th token; answers that share
    their first `k` tokens share the node that scores the `k`-th, so comparing them compares tokens.
    """
    alive = list(range(len(TRIPLES)))
    for step in range(tree.answer_tokens.shape[1]):
        best = max(alive, key=lambda a: float(token_logprobs[a, step]))
        token = int(tree.answer_tokens[best, step])
        alive = [a for a in alive if int(tree.answer_tokens[a, step]) == token]
        finished = [a for a in alive if not tree.real[a, step + 1 :].any()]
        if finished:
            return TRIPLES[finished[0]]
    raise AssertionError("every answer ends")  # unreachable: the loop runs to the longest answer's end


def _suppressed(logits: torch.Tensor, banned: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 logits with the never-generated ids removed (as `generate`'s `suppress_tokens`), and their log-normaliser."""
    logits = logits.float()
    logits[..., banned] = float("-inf")
    return logits, torch.logsumexp(logits, dim=-1)


@torch.inference_mode()
def score_batch(
    model: torch.nn.Module, inputs: LlavaInputs, batch: dict[str, torch.Tensor], trees: Sequence[AnswerTree]
) -> list[LabelScores]:
    """Scores of every answer for one left-padded prompt batch (on the model's device): prefill, then the trees.

    Positions follow `generate` (`cumsum(attention_mask) - 1`), so the logits are the ones greedy
    decoding sees. The tree step reuses the prefill's cache with an explicit 4D mask (transformers
    passes a 4D mask through unchanged); rows with fewer nodes are padded with nodes that see only
    themselves. Only the answers' tokens are gathered from the logits, never a copy of the vocabulary.
    """
    device, banned = model.device, inputs.never_generated(model.get_output_embeddings().weight.shape[0])
    mask = batch["attention_mask"]
    positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
    prefill = model(**batch, position_ids=positions, use_cache=True, logits_to_keep=1)

    rows, width = len(trees), max(len(tree.tokens) for tree in trees)
    prompt_length = mask.shape[1]
    ids = torch.full((rows, width), inputs.pad_id, dtype=torch.long)
    node_positions = torch.zeros((rows, width), dtype=torch.long)
    allowed = torch.zeros((rows, 1, width, prompt_length + width), dtype=torch.bool)
    allowed[:, 0, :, prompt_length:] = torch.eye(width, dtype=torch.bool)
    for row, tree in enumerate(trees):
        size = len(tree.tokens)
        ids[row, :size] = torch.tensor(tree.tokens)
        node_positions[row, :size] = int(mask[row].sum()) - 1 + torch.tensor(tree.depths)
        allowed[row, 0, :size, :prompt_length] = mask[row].bool().cpu()
        allowed[row, 0, :size, prompt_length : prompt_length + size] = tree.ancestry
    additive = torch.zeros(allowed.shape, dtype=model.dtype).masked_fill(~allowed, torch.finfo(model.dtype).min)
    step = model(input_ids=ids.to(device), position_ids=node_positions.to(device), attention_mask=additive.to(device),
                 cache=prefill.cache, use_cache=True)

    # Line 0: the prompt's last position; line n + 1: node n.
    logits, normaliser = _suppressed(torch.cat([prefill.logits[:, -1:], step.logits], dim=1), banned)
    scores = []
    for row, tree in enumerate(trees):
        lines, tokens = tree.lines.to(device), tree.answer_tokens.to(device)
        token_logprobs = (logits[row, lines, tokens] - normaliser[row, lines]).double().cpu()
        answer_logprobs = torch.where(tree.real, token_logprobs, 0.0).sum(1).numpy()
        scores.append(LabelScores(answer_logprobs, _greedy(tree, token_logprobs)))
    return scores
