"""The merge core: formula, method protocol, selection, layout, planning and the engines.

It imports no merge method: methods (:mod:`mi_mergekit.methods`) build on it.

- :mod:`~mi_mergekit.merge.method` — what a method declares, and what every engine reads from it
- :mod:`~mi_mergekit.merge.kernel` — the formulas (the one place they are computed)
- :mod:`~mi_mergekit.merge.checks` — λ and NaN/inf checks
- :mod:`~mi_mergekit.merge.selection` — tensor name -> layer, module group; windows
- :mod:`~mi_mergekit.merge.layout` — the checkpoint's own tensor layout as a mergekit architecture
- :mod:`~mi_mergekit.merge.plan` — pre-flight checks and the per-tensor plan of any of our methods
- :mod:`~mi_mergekit.merge.hub` — hub ids resolved from the local Hugging Face cache
- :mod:`~mi_mergekit.merge.engine` — the streaming executor;
  :mod:`~mi_mergekit.merge.safetensors_io` — positioned safetensors reads and writes;
  :mod:`~mi_mergekit.merge.mergekit_engine` — mergekit's executor (``MI_MERGEKIT_ENGINE=mergekit``)
- :mod:`~mi_mergekit.merge.run` — a planned merge into staged output folders;
  :mod:`~mi_mergekit.merge.sweep` — n λ in one pass
- :mod:`~mi_mergekit.merge.config`, :mod:`~mi_mergekit.merge.recipes`,
  :mod:`~mi_mergekit.merge.lambdas` — reading and generating recipes, λ lists

Importing this package is cheap; the modules import torch and mergekit themselves.
"""
