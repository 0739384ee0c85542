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

PROMPT_END = -1
"""Where a token is scored from the prompt's last logits rather than from a node of the answer tree."""


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


@dataclass(frozen=True)
class AnswerTree:
    """The 27 answers' shared-prefix tree, flattened for one forward step.

    `tokens[n]` is the last token of prefix node `n` (every proper, non-empty prefix of an answer),
    `parents[n]` its parent node (`PROMPT_END` for a first token) and `depths[n]` its length.
    `paths[a]` lists, for each token of answer `a`, the node whose logits score it and the token.
    """

    tokens: list[int]
    parents: list[int]
    depths: list[int]
    paths: list[list[tuple[int, int]]]

    @classmethod
    def of(cls, continuations: Sequence[Sequence[int]]) -> AnswerTree:
        node_of: dict[tuple[int, ...], int] = {}
        tokens, parents, depths, paths = [], [], [], []
        for ids in continuations:
            path = []
            for k, token in enumerate(ids):
                path.append((node_of[tuple(ids[:k])] if k else PROMPT_END, token))
                prefix = tuple(ids[: k + 1])
                if k + 1 < len(ids) and prefix not in node_of:
                    node_of[prefix] = len(tokens)
                    tokens.append(token)
                    parents.append(node_of[tuple(ids[:k])] if k else PROMPT_END)
                    depths.append(k + 1)
            paths.append(path)
        return cls(tokens, parents, depths, paths)

    def ancestry(self) -> torch.Tensor:
        """`[n, m]` is True when node `m` is node `n` or one of its ancestors: what node `n` may attend to."""
        size = len(self.tokens)
        allowed = torch.eye(size, dtype=torch.bool)
        for node in range(size):
            parent = self.parents[node]
            if parent != PROMPT_END:
                allowed[node] |= allowed[parent]  # parents precede their children
        return allowed


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


def _greedy(tree: AnswerTree, logprobs: torch.Tensor, prompt_logprobs: torch.Tensor) -> Triple:
    """Follow the tree from the prompt, taking the most probable allowed token at each step."""
    alive = list(range(len(TRIPLES)))
    step = 0
    while True:
        node = tree.paths[alive[0]][step][0]  # the answers still alive share their first `step` tokens
        scores = prompt_logprobs if node == PROMPT_END else logprobs[node]
        choice = max({tree.paths[a][step][1] for a in alive}, key=lambda token: float(scores[token]))
        alive = [a for a in alive if tree.paths[a][step][1] == choice]
        finished = [a for a in alive if len(tree.paths[a]) == step + 1]
        if finished:
            return TRIPLES[finished[0]]
        step += 1


def _log_softmax(logits: torch.Tensor, banned: list[int]) -> torch.Tensor:
    """Log-probabilities in fp32 with the never-generated ids removed, as `generate`'s `suppress_tokens` does."""
    logits = logits.float()
    logits[..., banned] = float("-inf")
    return torch.log_softmax(logits, dim=-1)


@torch.inference_mode()
def score_batch(
    model: torch.nn.Module, inputs: LlavaInputs, batch: dict[str, torch.Tensor], trees: Sequence[AnswerTree]
) -> list[LabelScores]:
    """Scores of every answer for one left-padded prompt batch (on the model's device): prefill, then the trees.

    Positions follow `generate` (`cumsum(attention_mask) - 1`), so the logits are the ones greedy
    decoding sees. The tree step reuses the prefill's cache with an explicit 4D mask (transformers
    passes a 4D mask through unchanged); rows with fewer nodes are padded with nodes that see only
    themselves.
    """
    device, banned = model.device, inputs.never_generated(model.get_output_embeddings().weight.shape[0])
    mask = batch["attention_mask"]
    positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
    prefill = model(**batch, position_ids=positions, use_cache=True, logits_to_keep=1)
    prompt_logprobs = _log_softmax(prefill.logits[:, -1], banned)

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
        allowed[row, 0, :size, prompt_length : prompt_length + size] = tree.ancestry()
    additive = torch.zeros(allowed.shape, dtype=model.dtype).masked_fill(~allowed, torch.finfo(model.dtype).min)
    step = model(input_ids=ids.to(device), position_ids=node_positions.to(device), attention_mask=additive.to(device),
                 cache=prefill.cache, use_cache=True)
    node_logprobs = _log_softmax(step.logits, banned).cpu()
    prompt_logprobs = prompt_logprobs.cpu()

    scores = []
    for row, tree in enumerate(trees):
        # One table per row: line 0 the prompt's last log-probs, line n + 1 those after node n.
        table = torch.cat([prompt_logprobs[row : row + 1], node_logprobs[row]]).double()
        length = max(len(path) for path in tree.paths)
        lines = torch.tensor([[n + 1 for n, _ in path] + [0] * (length - len(path)) for path in tree.paths])
        tokens = torch.tensor([[t for _, t in path] + [0] * (length - len(path)) for path in tree.paths])
        real = torch.tensor([[True] * len(path) + [False] * (length - len(path)) for path in tree.paths])
        answer_logprobs = torch.where(real, table[lines, tokens], 0.0).sum(1).numpy()
        scores.append(LabelScores(answer_logprobs, _greedy(tree, node_logprobs[row], prompt_logprobs[row])))
    return scores
