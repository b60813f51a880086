"""A stand-in ``vllm`` module that keeps vLLM 0.33's rules for everything mi-mergekit calls.

vLLM has no CPU wheel, so the vLLM backend is tested against this module. It is written from
vLLM 0.33.0's source (the ``vllm-0.33.0`` wheel on PyPI; file names below are under ``vllm/``)
and enforces what that source enforces for the calls we make, so that a mismatch between
our backend and the real vLLM fails a test here rather than on a GPU box:

- ``SamplingParams``: only the fields vLLM's ``msgspec`` struct has (``sampling_params.py``,
  ``class SamplingParams``; anything else is a ``TypeError``, as msgspec raises), its
  defaults (top_k 0, min_p 0.0, top_p 1.0, temperature 1.0, n 1, max_tokens 16), and its
  ``__post_init__`` / ``_verify_args`` checks, including ``_verify_greedy_sampling``: "n must
  be 1 when using greedy sampling";
- ``LLM(model, *, ...)``: the keyword parameters of ``entrypoints/llm.py`` ``LLM.__init__``
  plus, through ``**kwargs``, only fields of ``engine/arg_utils.py`` ``EngineArgs``
  (``max_model_len`` is one); ``get_tokenizer()``;
- ``LLM.generate(prompts, sampling_params, *, use_tqdm, lora_request, priority,
  tokenization_kwargs, mm_processor_kwargs)``: a list of params must match the prompts in
  length (``entrypoints/common/offline.py`` ``_params_to_seq``); text prompts are tokenized
  with ``add_special_tokens=True`` unless ``tokenization_kwargs`` says otherwise
  (``renderers/base.py`` ``default_cmpl_tok_params``, ``renderers/params.py``
  ``TokenizeParams.with_kwargs``), so a BOS-adding tokenizer shows a double BOS;
- outputs: ``RequestOutput(request_id, prompt, prompt_token_ids, prompt_logprobs, outputs,
  finished)`` with ``CompletionOutput(index, text, token_ids, cumulative_logprob, logprobs,
  finish_reason, stop_reason)`` (``outputs.py``); finish reasons are the strings of
  ``v1/engine/__init__.py`` ``FINISH_REASON_STRINGS``;
- :func:`serve_sampling_params`: how ``vllm serve`` turns a ``/v1/completions`` body into
  SamplingParams (``entrypoints/openai/completion/protocol.py`` ``to_sampling_params``:
  request value, else the server default from the model's ``generation_config.json``
  (``config/model.py`` ``get_diff_sampling_param``), else the OpenAI default).

What the engine generates is up to the test (``LLM.script``): a function of the prompt's
token ids, the SamplingParams and the sample index returning ``(text, token_ids,
finish_reason)``.
"""

from __future__ import annotations

import math
import types
from dataclasses import dataclass
from typing import Callable, Optional

#: v1/engine/__init__.py
FINISH_REASON_STRINGS = ("stop", "length", "abort", "error", "repetition")
#: sampling_params.py
_SAMPLING_EPS = 1e-5
_MAX_TEMP = 1e-2


class VLLMValidationError(Exception):
    """exceptions.py: VLLMValidationError(VLLMClientError(VLLMError(Exception)))."""


#: sampling_params.py, the fields of ``class SamplingParams`` (public ones) and their defaults
SAMPLING_FIELDS = {
    "n": 1, "presence_penalty": 0.0, "frequency_penalty": 0.0, "repetition_penalty": 1.0, "temperature": 1.0,
    "watermarking": None, "top_p": 1.0, "top_k": 0, "min_p": 0.0, "seed": None, "stop": None,
    "stop_token_ids": None, "ignore_eos": False, "max_tokens": 16, "min_tokens": 0, "logprobs": None,
    "prompt_logprobs": None, "prompt_logprob_token_ids": None, "prompt_logprob_start": None,
    "logprob_token_ids": None, "flat_logprobs": False, "detokenize": True, "skip_special_tokens": True,
    "spaces_between_special_tokens": True, "include_stop_str_in_output": False, "output_kind": None,
    "stream_interval": None, "skip_clone": False, "output_text_buffer_length": 0, "structured_outputs": None,
    "logit_bias": None, "allowed_token_ids": None, "extra_args": None, "bad_words": None,
    "skip_reading_prefix_cache": None, "thinking_token_budget": None, "repetition_detection": None,
    "routed_experts_prompt_start": 0, "trace_decode_token_ids": None,
}


class SamplingParams:
    def __init__(self, **kwargs):
        unknown = sorted(set(kwargs) - set(SAMPLING_FIELDS))
        if unknown:  # msgspec.Struct.__init__
            raise TypeError(f"Unexpected keyword argument '{unknown[0]}'")
        for name, default in SAMPLING_FIELDS.items():
            setattr(self, name, kwargs.get(name, default))
        self.__post_init__()

    def __post_init__(self) -> None:
        if 0 < self.temperature < _MAX_TEMP:
            self.temperature = max(self.temperature, _MAX_TEMP)
        if self.seed == -1:
            self.seed = None
        self._verify_args()
        if self.temperature < _SAMPLING_EPS:  # zero temperature means greedy sampling
            self.top_p, self.top_k, self.min_p = 1.0, 0, 0.0
            if self.n > 1:  # _verify_greedy_sampling
                raise VLLMValidationError(f"n must be 1 when using greedy sampling, got {self.n}.")

    def _verify_args(self) -> None:
        if not isinstance(self.n, int):
            raise VLLMValidationError(f"n must be an int, but is of type {type(self.n)}")
        if self.n < 1:
            raise VLLMValidationError(f"n must be at least 1, got {self.n}.")
        if not math.isfinite(self.temperature):
            raise VLLMValidationError(f"temperature must be a finite number, got {self.temperature}.")
        if self.temperature < 0.0:
            raise VLLMValidationError(f"temperature must be non-negative, got {self.temperature}.")
        if self.temperature > 2.0:
            raise VLLMValidationError(f"temperature must be in [0, 2], got {self.temperature}.")
        if not 0.0 < self.top_p <= 1.0:
            raise VLLMValidationError(f"top_p must be in (0, 1], got {self.top_p}.")
        if self.top_k < -1:  # "quietly accept -1 as disabled, but prefer 0"
            raise VLLMValidationError(f"top_k must be 0 (disable), or at least 1, got {self.top_k}.")
        if not isinstance(self.top_k, int):
            raise VLLMValidationError(f"top_k must be an integer, got {type(self.top_k).__name__}")
        if not 0.0 <= self.min_p <= 1.0:
            raise VLLMValidationError(f"min_p must be in [0, 1], got {self.min_p}.")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise VLLMValidationError(f"max_tokens must be at least 1, got {self.max_tokens}.")
        if self.max_tokens is not None and self.min_tokens > self.max_tokens:
            raise VLLMValidationError(f"min_tokens must be less than or equal to max_tokens={self.max_tokens}, "
                                      f"got {self.min_tokens}.")

    def sampling(self) -> dict:
        """What decides the samples, for comparisons in tests."""
        return {k: getattr(self, k) for k in ("n", "temperature", "top_p", "top_k", "min_p", "seed", "max_tokens")}


#: entrypoints/openai/completion/protocol.py, CompletionRequest._DEFAULT_SAMPLING_PARAMS
COMPLETION_DEFAULTS = {"repetition_penalty": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0,
                       "temperature": 1.0, "top_p": 1.0, "top_k": 0, "min_p": 0.0}
#: config/model.py, get_diff_sampling_param: what generation_config.json may set
GENERATION_CONFIG_PARAMS = ("repetition_penalty", "presence_penalty", "frequency_penalty", "temperature", "top_k",
                            "top_p", "min_p")


def serve_sampling_params(body: dict, generation_config: dict) -> SamplingParams:
    """``vllm serve``'s SamplingParams for a /v1/completions ``body`` (priority: the request's
    value, then the model's generation_config.json, then the OpenAI default)."""
    server_defaults = {k: generation_config[k] for k in GENERATION_CONFIG_PARAMS if generation_config.get(k) is not None}
    params = {name: body[name] if body.get(name) is not None else server_defaults.get(name, default)
              for name, default in COMPLETION_DEFAULTS.items()}
    return SamplingParams(n=body.get("n", 1), seed=body.get("seed"), max_tokens=body["max_tokens"], **params)


#: entrypoints/llm.py, the keyword parameters of LLM.__init__ (besides ``model``)
LLM_PARAMETERS = (
    "runner", "convert", "tokenizer", "tokenizer_mode", "skip_tokenizer_init", "trust_remote_code",
    "allowed_local_media_path", "allowed_media_domains", "tensor_parallel_size", "dtype", "quantization", "revision",
    "tokenizer_revision", "chat_template", "seed", "gpu_memory_utilization", "cpu_offload_gb", "offload_group_size",
    "offload_num_in_group", "offload_prefetch_step", "offload_params", "enforce_eager",
    "enable_return_routed_experts", "return_sampling_mask", "disable_custom_all_reduce", "hf_token", "hf_overrides",
    "mm_processor_kwargs", "pooler_config", "structured_outputs_config", "profiler_config", "attention_config",
    "kv_cache_memory_bytes", "compilation_config", "quantization_config", "logits_processors", "spec_method",
    "spec_model", "spec_tokens",
)
#: engine/arg_utils.py, the fields of EngineArgs (what LLM(**kwargs) passes on)
ENGINE_ARGS = frozenset((
    '_api_process_count', '_api_process_rank', 'additional_config', 'aggregate_engine_logging',
    'all2all_backend', 'allow_deprecated_quantization', 'allowed_local_media_path',
    'allowed_media_domains', 'async_scheduling', 'attention_backend', 'attention_config',
    'aux_output_config', 'block_size', 'code_revision', 'collect_detailed_traces',
    'compilation_config', 'config_format', 'convert', 'cp_kv_cache_interleave_size',
    'cpu_distributed_timeout_seconds', 'cpu_offload_gb', 'cpu_offload_params',
    'cudagraph_capture_sizes', 'cudagraph_metrics', 'custom_histogram_buckets',
    'data_parallel_address', 'data_parallel_backend', 'data_parallel_external_lb',
    'data_parallel_hybrid_lb', 'data_parallel_multi_port_external_lb', 'data_parallel_rank',
    'data_parallel_rpc_port', 'data_parallel_size', 'data_parallel_size_local',
    'data_parallel_start_rank', 'dbo_decode_token_threshold', 'dbo_prefill_token_threshold',
    'dcp_comm_backend', 'dcp_kv_cache_interleave_size', 'dcp_q_replicate',
    'decode_context_parallel_size', 'default_mm_loras', 'device_ids', 'diffusion_config',
    'disable_cascade_attn', 'disable_chunked_mm_input', 'disable_custom_all_reduce',
    'disable_hybrid_kv_cache_manager', 'disable_log_stats', 'disable_nccl_for_dp_synchronization',
    'disable_sliding_window', 'distributed_executor_backend', 'distributed_timeout_seconds',
    'download_dir', 'dp_sync_interval', 'dtype', 'ec_manager_config', 'ec_transfer_config',
    'elastic_ep_max_dp_size', 'enable_batch_sharded_sampling', 'enable_chunked_prefill',
    'enable_cumem_allocator', 'enable_dbo', 'enable_elastic_ep', 'enable_ep_weight_filter',
    'enable_eplb', 'enable_expert_parallel', 'enable_fault_tolerance', 'enable_flashinfer_autotune',
    'enable_hc_sp', 'enable_layerwise_nvtx_tracing', 'enable_logging_iteration_details',
    'enable_lora', 'enable_mamba_cache_stochastic_rounding',
    'enable_mamba_shared_prefix_checkpoint', 'enable_mfu_metrics', 'enable_mixed_moe_lora_format',
    'enable_mm_embeds', 'enable_mm_processor_stats', 'enable_moe_shared_loras',
    'enable_nccl_comm_suspend', 'enable_prefix_caching', 'enable_prompt_embeds',
    'enable_return_routed_experts', 'enable_shm_tensor_arena', 'enable_sleep_mode',
    'enable_tower_connector_lora', 'enable_trace_replay', 'enforce_eager', 'engram_config',
    'eplb_config', 'expert_placement_strategy', 'fail_on_environ_validation',
    'fault_tolerance_config', 'fully_sharded_loras', 'gdn_prefill_backend', 'generation_config',
    'gpu_memory_utilization', 'hf_config_path', 'hf_overrides', 'hf_token', 'ignore_patterns',
    'interleave_mm_strings', 'io_processor_plugin', 'ir_op_priority', 'jit_monitor_mode',
    'jit_monitor_verbose', 'kda_decode_backend', 'kda_prefill_backend', 'kernel_config',
    'kv_cache_dtype', 'kv_cache_dtype_skip_layers', 'kv_cache_memory_bytes', 'kv_cache_metrics',
    'kv_cache_metrics_sample', 'kv_events_config', 'kv_offloading_backend', 'kv_offloading_size',
    'kv_sharing_fast_prefill', 'kv_transfer_config', 'language_model_only', 'limit_mm_per_prompt',
    'linear_backend', 'load_format', 'log_config_file', 'log_level', 'logging_config',
    'logits_processors', 'logprobs_mode', 'long_prefill_token_threshold',
    'long_prefill_token_threshold_adaptive', 'lora_dtype', 'lora_target_modules', 'mamba_backend',
    'mamba_block_size', 'mamba_cache_dtype', 'mamba_cache_mode', 'mamba_cache_philox_rounds',
    'mamba_config', 'mamba_ssm_cache_dtype', 'mamba_ssu_algorithm', 'master_addr', 'master_port',
    'max_cpu_loras', 'max_cudagraph_capture_size', 'max_logprobs', 'max_lora_cls_labels',
    'max_lora_rank', 'max_loras', 'max_model_len', 'max_num_active_seqs', 'max_num_batched_tokens',
    'max_num_queued_reqs', 'max_num_queued_tokens', 'max_num_scheduled_tokens', 'max_num_seqs',
    'max_parallel_loading_workers', 'media_io_kwargs', 'mm_device_do_normalize',
    'mm_encoder_attn_backend', 'mm_encoder_attn_dtype', 'mm_encoder_fp8_scale_path',
    'mm_encoder_fp8_scale_save_margin', 'mm_encoder_fp8_scale_save_path', 'mm_encoder_only',
    'mm_encoder_tp_mode', 'mm_hasher_algorithm', 'mm_ipc_gpu_memory_gb', 'mm_processor_cache_gb',
    'mm_processor_cache_type', 'mm_processor_device', 'mm_processor_kwargs',
    'mm_shm_cache_max_object_size_mb', 'mm_tensor_ipc', 'model', 'model_class_overrides',
    'model_impl', 'model_loader_extra_config', 'model_weights', 'moe_backend', 'monokernel',
    'nnodes', 'node_rank', 'num_gpu_blocks_override', 'numa_bind', 'numa_bind_cpus',
    'numa_bind_nodes', 'offload_backend', 'offload_group_size', 'offload_num_in_group',
    'offload_params', 'offload_prefetch_step', 'optimization_level', 'otlp_traces_endpoint',
    'override_generation_config', 'per_request_spec_decode_metrics', 'performance_mode',
    'pipeline_parallel_size', 'pooler_config', 'prefill_context_parallel_size',
    'prefill_schedule_interval', 'prefix_cache_retention_interval', 'prefix_caching_hash_algo',
    'prefix_match_unit', 'profiler_config', 'pt_load_map_location', 'quantization',
    'quantization_config', 'ray_workers_use_nsight', 'reasoning_config', 'reasoning_parser',
    'reasoning_parser_plugin', 'renderer_num_workers', 'replayssm_buffer_len',
    'return_sampling_mask', 'revision', 'runner', 'safetensors_load_strategy',
    'safetensors_prefetch_block_size', 'safetensors_prefetch_num_threads', 'scheduler_cls',
    'scheduler_reserve_full_isl', 'scheduling_policy', 'seed', 'served_model_name',
    'show_hidden_metrics_for_version', 'shutdown_timeout', 'skip_mm_profiling',
    'skip_tokenizer_init', 'sleep_mode_backend', 'sleep_mode_offload_cudagraph',
    'sleep_preserve_parameter_names', 'sparse_indexer_topk_backend', 'spec_method', 'spec_model',
    'spec_tokens', 'specialize_active_lora', 'speculative_config', 'stream_interval',
    'structured_outputs_config', 'swa_bounded_replay', 'tensor_parallel_size', 'tokenizer',
    'tokenizer_mode', 'tokenizer_revision', 'tokens_only', 'trust_remote_code', 'ubatch_size',
    'use_fp64_gumbel', 'use_replayssm', 'use_tqdm_on_load', 'video_pruning_method',
    'video_pruning_rate', 'watchdog_config', 'watermark', 'watermark_config',
    'weight_transfer_config', 'worker_cls', 'worker_extension_cls'
))


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list
    cumulative_logprob: Optional[float]
    logprobs: Optional[list]
    finish_reason: Optional[str] = None
    stop_reason: Optional[object] = None


@dataclass
class RequestOutput:
    request_id: str
    prompt: Optional[str]
    prompt_token_ids: Optional[list]
    prompt_logprobs: Optional[list]
    outputs: list
    finished: bool


def _default_script(prompt_ids, params, index):
    return f"sample {index} of a {len(prompt_ids)}-token prompt", [7] * (index + 1), "stop"


class LLM:
    #: (prompt token ids, SamplingParams, sample index) -> (text, token ids, finish reason)
    script: Callable = staticmethod(_default_script)
    #: every engine request: (prompt token ids, SamplingParams)
    requests: list = []
    created: list = []
    tokenizer_loader: Callable = None

    def __init__(self, model: str, **kwargs):
        unknown = sorted(k for k in kwargs if k not in LLM_PARAMETERS and k not in ENGINE_ARGS)
        if unknown:  # EngineArgs(**kwargs)
            raise TypeError(f"EngineArgs.__init__() got an unexpected keyword argument '{unknown[0]}'")
        self.model, self.kwargs = model, kwargs
        LLM.created.append(dict(model=model, **kwargs))
        self._tokenizer = LLM.tokenizer_loader(kwargs.get("tokenizer") or model)

    def get_tokenizer(self):
        return self._tokenizer

    def generate(self, prompts, sampling_params=None, *, use_tqdm=True, lora_request=None, priority=None,
                 tokenization_kwargs=None, mm_processor_kwargs=None):
        prompts = [prompts] if isinstance(prompts, (str, dict)) else list(prompts)
        if sampling_params is None:
            sampling_params = SamplingParams()
        if isinstance(sampling_params, SamplingParams):
            sampling_params = [sampling_params] * len(prompts)
        elif len(sampling_params) != len(prompts):
            raise VLLMValidationError(f"The lengths of prompts ({len(prompts)}) and params "
                                      f"({len(sampling_params)}) must be the same.")
        unknown = set(tokenization_kwargs or {}) - {"add_special_tokens", "max_length", "truncation",
                                                    "truncate_prompt_tokens", "truncation_side", "do_lower_case",
                                                    "padding", "pad_prompt_tokens", "needs_detokenization"}
        if unknown:
            raise TypeError(f"unexpected tokenization kwargs {sorted(unknown)}")
        add_special = (tokenization_kwargs or {}).get("add_special_tokens", True)
        results = []
        for number, (prompt, params) in enumerate(zip(prompts, sampling_params)):
            if isinstance(prompt, dict) and "prompt_token_ids" in prompt:
                ids, text = list(prompt["prompt_token_ids"]), None
            else:
                text = prompt["prompt"] if isinstance(prompt, dict) else prompt
                ids = self._tokenizer(text, add_special_tokens=add_special)["input_ids"]
            LLM.requests.append((ids, params))
            outputs = []
            for index in range(params.n):
                out_text, token_ids, reason = LLM.script(ids, params, index)
                assert reason in FINISH_REASON_STRINGS, reason
                outputs.append(CompletionOutput(index, out_text, list(token_ids), None, None, reason))
            outputs.reverse()  # vLLM returns a request's outputs in the order they finish
            results.append(RequestOutput(str(number), text, ids, None, outputs, True))
        return results


def install(monkeypatch, tokenizer_loader, script=None) -> types.ModuleType:
    """Put this stand-in in ``sys.modules['vllm']`` for one test; returns it."""
    import sys

    module = types.ModuleType("vllm")
    module.LLM, module.SamplingParams = LLM, SamplingParams
    LLM.requests, LLM.created = [], []
    LLM.tokenizer_loader = staticmethod(tokenizer_loader)
    LLM.script = staticmethod(script or _default_script)
    monkeypatch.setitem(sys.modules, "vllm", module)
    return module
