"""Run a planned merge (any of our methods) into one or more staged output folders.

Each output (one for ``mergekit-yaml`` / ``run_merge`` / ``mi-mergekit merge``,
n for a sweep) is a :class:`PlannedOutput`: its recipe (at one λ), the resolved
plan (:mod:`mi_mergekit.merge.plan`) and the hidden staging folder it is written
into (published by :mod:`mi_mergekit.safety`). The weights come from the
streaming engine (:mod:`mi_mergekit.merge.engine`) — or, with
``MI_MERGEKIT_ENGINE=mergekit`` or for a recipe the engine does not execute,
from mergekit's executor (:mod:`mi_mergekit.merge.mergekit_engine`); every other
file is written by mergekit's own helpers, as ``run_merge`` writes them, then
the tokenizer donor's tokenizer/chat template/generation_config and ``mi_plan.json``.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from typing import Any, Optional, Sequence

LOG = logging.getLogger("mi_mergekit")

# The files mergekit copies from its tokenizer donor, plus vocab.json (GPT-2 style BPE), and a
# multimodal model's processor configuration (image / video preprocessing, the processor's template).
TOKENIZER_DONOR_FILES = (
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer.model",
    "added_tokens.json",
    "merges.txt",
    "vocab.json",
    "chat_template.jinja",
    "chat_template.json",
    "generation_config.json",
    "preprocessor_config.json",
    "processor_config.json",
    "video_preprocessor_config.json",
)


#: what the output loses when mergekit's executor writes it
FALLBACK_LAYOUT = ("the output is sharded by --out-shard-size with mergekit's file names, not in the base "
                   "model's shard layout")


@dataclass
class PlannedOutput:
    config: Any  # MergeConfiguration of this output
    plan: Any  # MergePlan
    path: str  # final folder
    source: str  # recipe YAML (mergekit_config.yml, model card)
    stage: str = ""  # staging folder while it is written
    out_config: Any = None  # transformers config written as config.json
    lam: Optional[float] = None
    label: str = ""  # λ as text, e.g. "0.3" (sweeps)
    card_config: Any = None  # the recipe as written, for the model card (default: config)

    @property
    def settings(self):
        """tensor name -> the method's setting (model_interpolation: λ, None where kept)."""
        return self.plan.settings


def stream_weights(merge_config, outputs: Sequence[PlannedOutput], arch, options) -> bool:
    """Write every output's weights with the streaming engine; False if it does not apply."""
    from mergekit.common import ModelReference

    from mi_mergekit.merge.engine import NotStreamable, Output, engine_name, write_weights

    if engine_name() != "stream":
        LOG.warning("mergekit's executor writes the weights (MI_MERGEKIT_ENGINE=mergekit): %s", FALLBACK_LAYOUT)
        return False
    layout_donor = ModelReference.model_validate(outputs[0].plan.base)  # the outputs keep its shard files
    desc = "Merging" if len(outputs) == 1 else f"Sweep ({len(outputs)} λ)"
    try:
        write_weights(merge_config if len(outputs) == 1 else outputs[0].config, arch,
                      [Output(o.stage, o.settings) for o in outputs], options,
                      out_config=outputs[0].out_config, layout_donor=layout_donor, desc=desc)
    except NotStreamable as why:
        LOG.warning("mergekit's executor writes the weights (the streaming engine does not do this merge: %s): "
                    "%s", why, FALLBACK_LAYOUT)
        return False
    return True


def write_outputs(merge_config, outputs: Sequence[PlannedOutput], arch, options,
                  progress: Optional[bool] = None, share: bool = True) -> None:
    """Weights and every other file of every (staged) output."""
    from mi_mergekit import mergekit_compat
    from mi_mergekit.merge import mergekit_engine

    for output in outputs:
        output.out_config = mergekit_compat.output_config(output.config, arch, options)
    tokenizer = None
    if not stream_weights(merge_config, outputs, arch, options):
        show = (not options.quiet) if progress is None else progress
        tokenizer = mergekit_engine.write_weights(merge_config, outputs, arch, options, show, share)
    for output in outputs:
        finish_output(output, arch, tokenizer, options)


def finish_output(output: PlannedOutput, arch, tokenizer, options) -> None:
    """What mergekit's run_merge writes after the weights, then the tokenizer donor's files and our plan."""
    from mi_mergekit import mergekit_compat

    mergekit_compat.write_model_files(
        output.config, arch, output.out_config, output.stage, options, output.source,
        os.path.basename(output.path), tokenizer=tokenizer, log=LOG, card_config=output.card_config)
    copy_template_files(output.config, output.plan, output.stage, options)
    output.plan.write_json(os.path.join(output.stage, "mi_plan.json"))


def copy_template_files(merge_config, plan, out_dir: str, options) -> None:
    """Give the output the tokenizer donor's tokenizer, chat template, generation_config and
    processor files (where the method chooses one; else mergekit's choice stands)."""
    from mergekit.common import ModelReference

    if plan.tokenizer_donor is None:
        return
    donor = ModelReference.model_validate(plan.tokenizer_donor)
    rebuilt = bool(
        merge_config.tokenizer_source or merge_config.tokenizer or merge_config.chat_template
    )
    if not rebuilt and not options.copy_tokenizer:
        return
    source_dir = donor.merged(
        cache_dir=options.lora_merge_cache, trust_remote_code=options.trust_remote_code
    ).local_path(cache_dir=options.transformers_cache)
    # When mergekit rebuilt the tokenizer (tokenizer_source / chat_template set), keep
    # it and only add the donor's generation_config, which mergekit then omits.
    files = ("generation_config.json",) if rebuilt else TOKENIZER_DONOR_FILES
    for name in files:
        source, target = os.path.join(source_dir, name), os.path.join(out_dir, name)
        if os.path.exists(source):
            shutil.copyfile(source, target)
        elif os.path.exists(target) and not rebuilt:
            os.remove(target)  # the base's file would shadow the donor's tokenizer config
    LOG.info("tokenizer/chat template/generation_config taken from %s", donor)
