"""The LLaVA repository's own code on LLaVAC's records: run by the tests with .venv-llava's Python.

The `llava` package needs transformers 4.37, so it cannot be imported beside the project; the tests
run this script in the LLaVA environment and compare what it writes (a `torch.save` file) with the
project's own results. Every step below is LLaVA's code, called as its training and evaluation call it:

    dataset  LLAVA_MODEL DATA_JSON IMAGE_FOLDER OUT          LazySupervisedDataset: ids, labels, pixels
    logits   LLAVA_MODEL DATA_JSON IMAGE_FOLDER OUT          the fp32 model's logits on those items
    generate LORA_DIR BASE DATA_JSON IMAGE_FOLDER N OUT      builder.load_pretrained_model + greedy answer ids
"""

from __future__ import annotations

import json
import sys
import types

import torch
import transformers
from PIL import Image

from llava import conversation
from llava.constants import IMAGE_TOKEN_INDEX
from llava.mm_utils import process_images, tokenizer_image_token
from llava.model import LlavaLlamaForCausalLM
from llava.model.builder import load_pretrained_model
from llava.train.train import LazySupervisedDataset


def items(model_dir: str, data_json: str, image_folder: str) -> list[dict]:
    """LLaVA's training items, made as `train.py` makes them (vicuna_v1, pad, slow tokenizer, pad = unk)."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir, use_fast=False)
    tokenizer.pad_token = tokenizer.unk_token
    conversation.default_conversation = conversation.conv_templates["vicuna_v1"]
    vision_tower = json.load(open(f"{model_dir}/config.json"))["mm_vision_tower"]
    data_args = types.SimpleNamespace(
        image_folder=image_folder, image_aspect_ratio="pad", is_multimodal=True, mm_use_im_start_end=False,
        image_processor=transformers.CLIPImageProcessor.from_pretrained(vision_tower),
    )
    dataset = LazySupervisedDataset(data_json, tokenizer, data_args)
    return [dataset[i] for i in range(len(dataset))]


def fp32_model(model_dir: str) -> LlavaLlamaForCausalLM:
    """The LLaVA model and its CLIP tower in fp32, loaded as `builder.load_pretrained_model` loads them."""
    model = LlavaLlamaForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32)
    model.get_vision_tower().load_model()
    return model.eval()


@torch.inference_mode()
def logits(model_dir: str, data_json: str, image_folder: str) -> list[torch.Tensor]:
    model = fp32_model(model_dir)
    return [model(input_ids=item["input_ids"][None], images=item["image"][None]).logits[0] for item in items(model_dir, data_json, image_folder)]


@torch.inference_mode()
def generate(lora_dir: str, base: str, data_json: str, image_folder: str, max_new_tokens: int) -> list[list[int]]:
    """Greedy answers' token ids as `llava/eval/model_vqa_loader.py` generates them, one record at a time.

    Ids, not text: the caller decodes them with its own tokenizer, so only the model is compared.

    The builder loads in fp16 (LLaVA's evaluation setting); a CPU computes in fp32, so the merged
    model is cast up after loading, as it would run on a CPU.
    """
    tokenizer, model, image_processor, _ = load_pretrained_model(lora_dir, base, "llava-lora", device="cpu", device_map="cpu")
    model = model.float().eval()
    answers = []
    for record in json.load(open(data_json)):
        conv = conversation.conv_templates["vicuna_v1"].copy()
        conv.append_message(conv.roles[0], next(t["value"] for t in record["conversations"] if t["from"] == "human"))
        conv.append_message(conv.roles[1], None)
        input_ids = tokenizer_image_token(conv.get_prompt(), tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt")[None]
        image = Image.open(f"{image_folder}/{record['image']}").convert("RGB")
        images = process_images([image], image_processor, model.config).float()
        output = model.generate(input_ids, images=images, image_sizes=[image.size], do_sample=False, num_beams=1,
                                max_new_tokens=max_new_tokens, use_cache=True)
        answers.append(output[0].tolist())
    return answers


def main(argv: list[str]) -> None:
    command, *args = argv
    out = args.pop(-1)
    if command == "dataset":
        result = [{"input_ids": i["input_ids"], "labels": i["labels"], "pixel_values": i["image"]} for i in items(*args)]
    elif command == "logits":
        result = logits(*args)
    else:
        result = generate(*args[:4], int(args[4]))
    torch.save(result, out)


if __name__ == "__main__":
    main(sys.argv[1:])
