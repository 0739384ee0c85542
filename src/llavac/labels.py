"""The three sentiment labels and the rule that turns a (text, image) annotation into one pair label."""

from __future__ import annotations

LABELS: tuple[str, ...] = ("negative", "neutral", "positive")
"""Sorted, so scikit-learn's label order and ours agree everywhere (confusion matrices, reports)."""

TASKS: tuple[str, ...] = ("text", "image", "multimodal")
"""The three labels the classifier answers, in the order of the paper's response."""


def label_rule(text_label: str, image_label: str) -> str | None:
    """Multimodal label of Xu & Mao (2017), used by every MVSA-Single protocol.

    Agreeing labels keep their value; a neutral side yields to the other side; positive against
    negative is a genuine conflict and the pair is dropped (``None``).
    """
    if text_label == image_label:
        return text_label
    if text_label == "neutral":
        return image_label
    if image_label == "neutral":
        return text_label
    return None
