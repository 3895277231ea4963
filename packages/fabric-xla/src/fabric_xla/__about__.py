"""Version of the fabric-xla distribution and the plugin-interface version it was built for."""

__version__ = "0.1.0"
FABRIC_PLUGIN_API = "1.2"
