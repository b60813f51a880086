"""A tiny random Qwen3 chat model with a Thinking-style chat template, built offline.

The tokenizer is a byte-level BPE trained in code on a few sentences, with
Qwen's special tokens; ``<think>``/``</think>`` are ordinary added tokens, as in
Qwen3 tokenizers, so they survive ``skip_special_tokens=True``. The chat
template appends ``<think>\\n`` after the assistant header, like
Qwen3-Thinking-2507's.
"""

from __future__ import annotations

from pathlib import Path

THINKING_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n<think>\\n' }}{%- endif %}"
)
INSTRUCT_TEMPLATE = THINKING_TEMPLATE.replace("<think>\\n", "")

CORPUS = [
    "Please reason step by step, and put your final answer within \\boxed{}.",
    "The answer is \\boxed{204}. So the result is 1/2 or 0.5 and 3.",
    "Answer the following multiple choice question. ANSWER: A B C D",
    "Write a short poem about the sea in lowercase letters only, with no commas.",
    "user assistant system think about it; 0 1 2 3 4 5 6 7 8 9 + - * / = ( ) { }",
]


#: a Thinking template that starts with the BOS text, as Llama / R1-Distill templates do
BOS_TEMPLATE = "{{- bos_token }}" + THINKING_TEMPLATE


def build_tokenizer(chat_template: str = THINKING_TEMPLATE, bos: bool = False):
    """The tiny tokenizer; ``bos=True`` makes it add ``<|endoftext|>`` as a BOS to every
    encoding (``add_special_tokens=True``), as Llama tokenizers do."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    if bos:
        bos_id = tok.token_to_id("<|endoftext|>")
        tok.post_processor = processors.TemplateProcessing(
            single="<|endoftext|> $A", pair="<|endoftext|> $A $B", special_tokens=[("<|endoftext|>", bos_id)])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token="<|endoftext|>" if bos else None,
        additional_special_tokens=["<|im_start|>"],
    )
    fast.add_tokens(["<think>", "</think>"], special_tokens=False)
    fast.chat_template = chat_template
    return fast


def build_model(path: Path, seed: int = 0, chat_template: str = THINKING_TEMPLATE, think_close_bias: float = 0.0,
                bos: bool = False) -> Path:
    """Save a tiny random Qwen3 model + tokenizer to ``path``.

    ``think_close_bias`` > 0 makes the model emit ``</think>`` (and EOS) more
    often by scaling their (tied) embedding rows, so runs differ in Think #R.
    """
    import torch
    from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    tokenizer = build_tokenizer(chat_template, bos=bos)
    torch.manual_seed(seed)
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = Qwen3ForCausalLM(config)
    if think_close_bias:
        with torch.no_grad():
            emb = model.get_input_embeddings().weight
            for token in ("</think>", "<|im_end|>"):
                emb[tokenizer.convert_tokens_to_ids(token)] *= think_close_bias
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, do_sample=True
    )
    path = Path(path)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def talkative_model(path: Path):
    """The tiny model at ``path`` with weights redrawn at std 1: greedy traces that differ from prompt to
    prompt (at build_model's std 0.02 every prompt repeats one token), so an EOS can stop them at
    different steps."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path)
    torch.manual_seed(0)
    with torch.no_grad():
        for weight in model.parameters():
            if weight.dim() == 2:
                weight.normal_(0.0, 1.0)
    return model


def stop_token(model, tokenizer, prompt: str, after: int = 4) -> int:
    """A token that the greedy trace of ``prompt`` first emits at step ``after`` or later: made an EOS,
    it stops that prompt's samples mid-way (and others elsewhere or never)."""
    import torch

    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        trace = model.generate(ids, do_sample=False, max_new_tokens=24)[0, ids.shape[1]:].tolist()
    return next(t for i, t in enumerate(trace) if i >= after and t not in trace[:i])
