"""Version of the fabric-loggers distribution and the plugin API it was built for."""

__version__ = "0.1.0"
FABRIC_PLUGIN_API = "1.1"
