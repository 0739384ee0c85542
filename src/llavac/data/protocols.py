"""The three published split protocols of MVSA-Single, and their procedures re-implemented with a seed.

``cheema`` (Cheema et al. 2021: 10 stratified folds, each with a stratified val), ``random`` (one
stratified 8:1:1 split; CLMLF's published instance) and ``zhang`` (QMF: only pairs whose text and
image labels agree, about 60/20/20). The sizes each procedure gives on the 4511 real pairs are the
published ones (docs/design.md, "Protocols"; ``llavac.data.fetch`` pins the published files by commit and SHA-256).

The generated splits serve data the published files do not describe (the embedded sample, a
re-annotated corpus); ``llavac.data.official`` reads the published files into the same :class:`Split`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import get_args

import pandas as pd
from sklearn.model_selection import StratifiedKFold, train_test_split

from llavac.params import Protocol

PROTOCOLS: tuple[str, ...] = get_args(Protocol)
PARTS: tuple[str, ...] = ("train", "val", "test")
STRATUM = "multimodal_label"
"""Every protocol stratifies on the label it is scored on."""
CHEEMA_FOLDS = 10


@dataclass(frozen=True)
class Split:
    """One train/val/test partition; ``number`` is 1-based, as in the published file names."""

    number: int
    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame

    def parts(self) -> dict[str, pd.DataFrame]:
        return {"train": self.train, "val": self.val, "test": self.test}


def sorted_split(number: int, train: pd.DataFrame, val: pd.DataFrame, test: pd.DataFrame) -> Split:
    """A Split whose parts are sorted by id, so that files and diffs do not depend on draw order."""
    return Split(number, *(part.sort_values("id", ignore_index=True) for part in (train, val, test)))


def eligible_pairs(pairs: pd.DataFrame, protocol: str) -> pd.DataFrame:
    """The pairs a protocol splits: ``zhang`` (QMF) keeps only pairs whose text and image labels agree."""
    if protocol == "zhang":
        return pairs[pairs["text_label"] == pairs["image_label"]]
    return pairs


def _stratified_draw(frame: pd.DataFrame, size: int | float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(rest, drawn)``: ``size`` rows (a count, or a fraction that scikit-learn rounds up) drawn
    at random with the multimodal label proportions of ``frame``."""
    rest, drawn = train_test_split(frame, test_size=size, stratify=frame[STRATUM], random_state=seed)
    return rest, drawn


def cheema_splits(pairs: pd.DataFrame, seed: int, folds: int = CHEEMA_FOLDS) -> list[Split]:
    """Cheema et al.: split K tests on stratified fold K; its val is a stratified draw of one
    fold's size from the other folds; the rest trains. On 4511 pairs: 3607/452/452, then 3609/451/451."""
    kfold = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    splits = []
    for number, (rest_rows, test_rows) in enumerate(kfold.split(pairs, pairs[STRATUM]), start=1):
        train, val = _stratified_draw(pairs.iloc[rest_rows], len(test_rows), seed)
        splits.append(sorted_split(number, train, val, pairs.iloc[test_rows]))
    return splits


def random_split(pairs: pd.DataFrame, seed: int) -> list[Split]:
    """One stratified 8:1:1 split. CLMLF's val and test each hold a tenth of every class rounded
    down, so the draws take that many rows: 3611/450/450 on 4511 pairs."""
    tenth = int((pairs[STRATUM].value_counts() // 10).sum())
    rest, test = _stratified_draw(pairs, tenth, seed)
    train, val = _stratified_draw(rest, tenth, seed)
    return [sorted_split(1, train, val, test)]


def zhang_split(pairs: pd.DataFrame, seed: int) -> list[Split]:
    """QMF: the pairs whose text and image labels agree, 60 % train, the other 40 % halved into val
    and test (the odd row to test): 1555/518/519 on 2592 pairs."""
    train, held = _stratified_draw(eligible_pairs(pairs, "zhang"), 0.4, seed)
    val, test = _stratified_draw(held, 0.5, seed)
    return [sorted_split(1, train, val, test)]


_GENERATORS: dict[str, Callable[[pd.DataFrame, int], list[Split]]] = {
    "cheema": cheema_splits,
    "random": random_split,
    "zhang": zhang_split,
}


def generated_splits(pairs: pd.DataFrame, protocol: str, seed: int) -> list[Split]:
    """The protocol's procedure with ``seed``; the same pairs and seed give the same splits."""
    pairs = pairs.sort_values("id", ignore_index=True)
    try:
        return _GENERATORS[protocol](pairs, seed)
    except ValueError as exc:  # scikit-learn refuses strata too small for the draw
        counts = eligible_pairs(pairs, protocol)[STRATUM].value_counts().to_dict()
        raise ValueError(
            f"cannot draw {protocol} splits from {sum(counts.values())} pairs with multimodal labels {counts}: {exc}"
        ) from exc
