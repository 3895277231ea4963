"""The version of the plugin interfaces that backend packages are built against.

A backend registers the version it was built for under the ``fabric_core.plugin_api`` entry-point
group. Core accepts a backend whose major version equals ours and whose minor version is not newer
than ours (a newer minor may rely on interface additions this core lacks).
"""

PLUGIN_API_VERSION = "1.2"
