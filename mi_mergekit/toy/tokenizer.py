"""The toy pair's tokenizer and chat templates, built offline in code.

Character-level: every printable ASCII character and ``\\n`` is one token; a few
words are single tokens (``user``, ``assistant``, ``system``, ``\\boxed``), and the
Qwen3 special tokens ``<|endoftext|>``, ``<|im_start|>``, ``<|im_end|>``,
``<think>``, ``</think>`` are atomic. Both children share this vocabulary (same
ids); they differ only in chat template and generation_config.
"""

from __future__ import annotations

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
SPECIAL_TOKENS = [ENDOFTEXT, IM_START, IM_END]
# Like Qwen3, <think> and </think> are added tokens that are *not* "special"
# (so skip_special_tokens=True keeps them in decoded text).
WORD_TOKENS = [THINK_OPEN, THINK_CLOSE, "user", "assistant", "system", "\\boxed"]
CHARS = ["\n"] + [chr(c) for c in range(32, 127)]

# Modelled on Qwen3-4B-*-2507's templates (system message, user/assistant turns,
# the Thinking template strips earlier turns' reasoning and pre-inserts <think>).
_TEMPLATE_HEAD = (
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{%- set content = message['content'] %}"
    "{%- if '</think>' in content %}"
    "{%- set content = content.split('</think>')[-1].lstrip('\\n') %}"
    "{%- endif %}"
    "{{- '<|im_start|>assistant\\n' + content + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
)
INSTRUCT_CHAT_TEMPLATE = (
    _TEMPLATE_HEAD
    + "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
THINKING_CHAT_TEMPLATE = (
    _TEMPLATE_HEAD
    + "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n<think>\\n' }}{%- endif %}"
)

# The paper's decoding settings.
THINKING_SAMPLING = {"temperature": 0.6, "top_p": 0.95, "top_k": 20}
INSTRUCT_SAMPLING = {"temperature": 0.7, "top_p": 0.8, "top_k": 20}


def prompt_text(question: str, thinking_template: bool) -> str:
    """The chat-formatted prompt (same string the chat templates render)."""
    p = f"{IM_START}user\n{question}{IM_END}\n{IM_START}assistant\n"
    return p + f"{THINK_OPEN}\n" if thinking_template else p


def build_tokenizer(chat_template: str | None = None):
    """A ``PreTrainedTokenizerFast`` over the toy vocabulary (deterministic ids)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab: dict[str, int] = {}
    for tok in SPECIAL_TOKENS + WORD_TOKENS + CHARS + ["<unk>"]:
        vocab.setdefault(tok, len(vocab))
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tk.decoder = decoders.Fuse()
    tk.add_special_tokens(SPECIAL_TOKENS)
    tk.add_tokens(WORD_TOKENS)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        unk_token="<unk>",
        model_max_length=512,
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )
    if chat_template is not None:
        tok.chat_template = chat_template
    return tok
