"""The paper's prompt, the vicuna_v1 template and the LLaVA-repo record format."""

import pytest

from llavac.prompt import SYSTEM, answer, chat_prompt, chat_text, human_turn, llava_record, question_record

FIGURE_2 = """Consider the following Image and Text.
Image: <image>
Text: RT @babeshawnmendes: "that was really energetic"
Classify the sentiment labels (negative, neutral, positive) for the Image and Text labels, separately.
Finally, jointly analyze and classify the multimodal label for both Image and Text.
Provide a short answer with 3 labels for Text, Image, and Multimodal labels, respectively."""

TWEET = 'RT @babeshawnmendes: "that was really energetic"'


def test_inline_prompt_is_figure_2_verbatim():
    assert human_turn(TWEET, "inline") == FIGURE_2


def test_front_moves_the_image_token_like_the_llava_repository():
    turn = human_turn(TWEET, "front")
    assert turn.startswith("<image>\nConsider the following Image and Text.\nImage: \nText: ")
    assert turn.count("<image>") == 1
    # What LLaVA's preprocess_multimodal does to the inline turn.
    assert turn == "<image>\n" + FIGURE_2.replace("<image>", "").strip()


def test_unknown_image_position_names_the_choices():
    with pytest.raises(ValueError, match="front, inline"):
        human_turn(TWEET, "middle")


def test_vicuna_v1_strings():
    assert chat_prompt("hi") == f"{SYSTEM} USER: hi ASSISTANT:"
    assert chat_text("hi", "positive, neutral, positive") == f"{SYSTEM} USER: hi ASSISTANT: positive, neutral, positive</s>"


def test_answer_order_is_text_image_multimodal_and_rejects_unknown_labels():
    assert answer("negative", "neutral", "negative") == "negative, neutral, negative"
    with pytest.raises(ValueError, match="negative, neutral, positive"):
        answer("happy", "neutral", "positive")


def test_llava_record_shape():
    pair = {"id": 7, "text": "so happy #sun", "text_label": "positive", "image_label": "neutral",
            "multimodal_label": "positive", "image_path": "data/7.jpg"}
    record = llava_record(pair, "front")
    assert record["id"] == 7 and record["image"] == "data/7.jpg"
    assert [t["from"] for t in record["conversations"]] == ["human", "gpt"]
    assert record["conversations"][0]["value"] == human_turn("so happy #sun", "front")
    assert record["conversations"][1]["value"] == "positive, neutral, positive"
    assert list(record) == ["id", "image", "conversations", "text_label", "image_label", "multimodal_label"]
    assert [record[f"{task}_label"] for task in ("text", "image", "multimodal")] == ["positive", "neutral", "positive"]


def test_a_pair_to_classify_is_the_training_record_without_the_answer():
    pair = {"id": "x1", "text": "bus at 5", "text_label": "neutral", "image_label": "neutral",
            "multimodal_label": "neutral", "image_path": "x1.png"}
    question = question_record("x1", "x1.png", "bus at 5", "inline")
    trained = llava_record(pair, "inline")
    assert question == {"id": "x1", "image": "x1.png", "conversations": trained["conversations"][:1]}


def test_modalities_blank_one_side_and_keep_the_wording_and_the_answer():
    pair = {"id": 3, "text": "so happy #sun", "text_label": "positive", "image_label": "negative",
            "multimodal_label": "neutral", "image_path": "data/3.jpg"}
    both, text_only, image_only = (llava_record(pair, "inline", m) for m in ("both", "text", "image"))
    assert both == llava_record(pair, "inline")
    assert text_only["image"] is None and text_only["conversations"] == both["conversations"]
    assert image_only["image"] == "data/3.jpg"
    assert image_only["conversations"][0]["value"] == human_turn("", "inline")
    assert "Text: \nClassify the sentiment labels" in image_only["conversations"][0]["value"]
    assert {r["conversations"][1]["value"] for r in (both, text_only, image_only)} == {"positive, negative, neutral"}
    with pytest.raises(ValueError, match="both, text, image"):
        llava_record(pair, "front", "audio")
