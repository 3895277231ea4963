"""Version of the fabric-cuda distribution and the plugin interface it was built for."""

__version__ = "0.1.0"
FABRIC_PLUGIN_API = "1.1"
