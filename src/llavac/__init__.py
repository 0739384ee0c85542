"""LLaVAC: LLaVA-1.5 fine-tuned with LoRA as a multimodal sentiment classifier."""

import warnings

__version__ = "0.1.0"

# peft's PeftModel reads `model.is_gradient_checkpointing` (peft/peft_model.py) each time it wraps a model,
# which transformers 5 deprecated in favour of `is_activation_checkpointing`: one FutureWarning per adapter
# trained or loaded (11 per `make repro`), about peft's code, not ours, and harmless until transformers 6.
# Only that message from that module is silenced; any other warning still shows.
warnings.filterwarnings(
    "ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning,
    module=r"transformers\.modeling_utils",
)
