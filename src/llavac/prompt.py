"""The paper's prompt (Figure 2), the vicuna_v1 conversation template, and the LLaVA-repo record format.

One module owns every string the model sees, so that every path that trains or predicts, ours or
the LLaVA repository's own scripts reading the formatted JSON, gets the same text.
"""

from __future__ import annotations

from typing import Any, get_args

from llavac.labels import LABELS, TASKS
from llavac.params import ImagePosition, Modalities

IMAGE_TOKEN = "<image>"

PROMPT_TEMPLATE = (
    "Consider the following Image and Text.\n"
    "Image: <image>\n"
    "Text: {text}\n"
    "Classify the sentiment labels (negative, neutral, positive) for the Image and Text labels, separately.\n"
    "Finally, jointly analyze and classify the multimodal label for both Image and Text.\n"
    "Provide a short answer with 3 labels for Text, Image, and Multimodal labels, respectively."
)
"""Figure 2 of the paper, line for line."""

SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
"""The vicuna_v1 system message (LLaVA's `--version v1`)."""

EOS = "</s>"

ANSWER_TEMPLATE = "{text}, {image}, {multimodal}"
"""The response: the three labels in the paper's order (text, image, multimodal)."""

IMAGE_POSITIONS: tuple[str, ...] = get_args(ImagePosition)
MODALITIES: tuple[str, ...] = get_args(Modalities)


def human_turn(text: str, image_position: ImagePosition = "front") -> str:
    """The user's message for one tweet.

    ``front`` reproduces the LLaVA repository, whose preprocessing strips ``<image>`` from wherever it
    stands and restarts the turn with ``"<image>\\n"``; ``inline`` keeps Figure 2's placement.
    """
    prompt = PROMPT_TEMPLATE.replace("{text}", text)
    if image_position == "inline":
        return prompt
    if image_position == "front":
        return IMAGE_TOKEN + "\n" + prompt.replace(IMAGE_TOKEN, "").strip()
    raise ValueError(f"image_position {image_position!r} is not one of: {', '.join(IMAGE_POSITIONS)}")


def split_human_turn(human: str) -> tuple[str, str, str]:
    """The user's message as (what precedes the tweet, the tweet text, what follows it), either image position.

    The inverse of `human_turn`; what cuts an over-long tweet to the model's limit uses it. Raises
    ValueError for a message that is not the paper's prompt.
    """
    marker = "\x00"
    for position in IMAGE_POSITIONS:
        head, tail = human_turn(marker, position).split(marker)  # type: ignore[arg-type]
        if human.startswith(head) and human.endswith(tail) and len(human) >= len(head) + len(tail):
            return head, human[len(head) : len(human) - len(tail)], tail
    raise ValueError(f"the user message {human[:60]!r}... is not the paper's prompt, so its tweet text cannot be found")


def answer(text_label: str, image_label: str, multimodal_label: str) -> str:
    """The response the model is trained to give, e.g. ``"positive, neutral, positive"``."""
    for label in (text_label, image_label, multimodal_label):
        if label not in LABELS:
            raise ValueError(f"label {label!r} is not one of: {', '.join(LABELS)}")
    return ANSWER_TEMPLATE.format(text=text_label, image=image_label, multimodal=multimodal_label)


def chat_prompt(human: str) -> str:
    """The vicuna_v1 string up to where the assistant starts answering (what generation continues)."""
    return f"{SYSTEM} USER: {human} ASSISTANT:"


def chat_text(human: str, reply: str) -> str:
    """The full vicuna_v1 training string: prompt, one space, the answer, ``</s>``."""
    return f"{chat_prompt(human)} {reply}{EOS}"


def question_record(
    pair_id: Any, image: str | None, text: str, image_position: ImagePosition = "front"
) -> dict[str, Any]:
    """A pair to classify as a record of the LLaVA repository's JSON (`docs/Finetune_Custom_Data.md`):
    the user's turn only, which is all prediction reads. ``image`` is relative to the image folder;
    ``None`` stands for a blank image of the processor's mean colour (`model.inputs.load_images`)."""
    return {
        "id": pair_id,
        "image": image,
        "conversations": [{"from": "human", "value": human_turn(text, image_position)}],
    }


def llava_record(
    pair: dict[str, Any], image_position: ImagePosition = "front", modalities: Modalities = "both"
) -> dict[str, Any]:
    """One labelled pair (a row of the pairs table) as a fine-tuning record: the question, the answer.

    `modalities` says what the model sees, the prompt's wording unchanged: `both` the pair; `text` the
    tweet and a blank image (``"image": null``, the same number of image tokens); `image` the image
    and an empty tweet (``Text: `` ends its line). The answer keeps all three gold labels. The gold
    labels ride along as extra keys; the LLaVA repository ignores keys it does not know.
    """
    if modalities not in MODALITIES:
        raise ValueError(f"modalities {modalities!r} is not one of: {', '.join(MODALITIES)}")
    labels = {f"{task}_label": pair[f"{task}_label"] for task in TASKS}
    image = None if modalities == "text" else pair["image_path"]
    text = "" if modalities == "image" else pair["text"]
    record = question_record(pair["id"], image, text, image_position)
    reply = answer(pair["text_label"], pair["image_label"], pair["multimodal_label"])
    record["conversations"].append({"from": "gpt", "value": reply})
    return record | labels
