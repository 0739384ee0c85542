"""LLaVAC: LLaVA-1.5 fine-tuned with LoRA as a multimodal sentiment classifier."""

__version__ = "0.1.0"
