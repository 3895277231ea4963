__version__ = "0.1.0"
#: The fabric-core plugin interface version this package was built for.
FABRIC_PLUGIN_API = "1.1"
