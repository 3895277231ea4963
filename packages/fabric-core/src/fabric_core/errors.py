"""Exceptions Fabric raises for problems the user can fix."""


class FabricError(Exception):
    """Base class of Fabric's own errors."""


class MisconfigurationError(FabricError, ValueError):
    """An argument or a combination of arguments is not valid; the message lists what is."""


class PluginNotInstalledError(MisconfigurationError, ImportError):
    """A name was asked for that only a package which is not installed provides."""


class PluginVersionError(FabricError, ImportError):
    """An installed backend was built for an incompatible plugin-interface version."""
