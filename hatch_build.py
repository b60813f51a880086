"""Hatchling build hook: ship ``mi_mergekit_autoload.pth`` at the wheel root.

mergekit 0.1.5 has no plugin entry points. The one-line ``.pth`` file installs a
tiny import hook (``mi_mergekit._autoload``) that registers our merge methods the
moment ``mergekit.merge_methods`` finishes importing, so the unchanged
``mergekit-yaml`` script and ``mergekit.merge.run_merge`` find them. Both regular
and editable wheels need the file, hence a hook rather than static config.
"""

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

PTH_SOURCE = "mi_mergekit_autoload.pth"


class AutoloadPthHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version, build_data):
        if self.target_name != "wheel":
            return
        key = "force_include_editable" if version == "editable" else "force_include"
        build_data[key][PTH_SOURCE] = PTH_SOURCE
        if version == "editable":
            # Editable wheels replace the static force-include map with this one;
            # the package itself is found through hatchling's own path .pth.
            pass
