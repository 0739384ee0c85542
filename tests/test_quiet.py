"""The one warning filter the library installs: peft's use of a property transformers 5 deprecated, nothing else."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import warnings
import llavac
from transformers import LlamaConfig, LlamaForCausalLM
model = LlamaForCausalLM(LlamaConfig(hidden_size=8, intermediate_size=8, num_hidden_layers=1, num_attention_heads=1,
                                     num_key_value_heads=1, vocab_size=16))
model.is_gradient_checkpointing  # what peft's PeftModel reads when it wraps a model
warnings.warn_explicit("a new deprecation", FutureWarning, "modeling_utils.py", 1, module="transformers.modeling_utils")
warnings.warn_explicit("`is_gradient_checkpointing` is deprecated", FutureWarning, "other.py", 1, module="other")
"""


def test_only_pefts_deprecated_property_read_is_silenced():
    done = subprocess.run([sys.executable, "-W", "default", "-c", SCRIPT], capture_output=True, text=True, check=True)
    shown = [line for line in done.stderr.splitlines() if "FutureWarning" in line]
    assert len(shown) == 2 and "a new deprecation" in shown[0] and shown[1].startswith("other.py"), done.stderr
