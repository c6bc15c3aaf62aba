"""The registry's exceptions, importable by its services, selectors and views without importing either."""


class RegistryError(ValueError):
    """A registry request that cannot be done; the message says why and what to do instead."""

    def __init__(self, message: str, *, status: int = 400, field: str | None = None):
        super().__init__(message)
        self.status = status
        self.field = field


class ImportCancelled(Exception):
    pass


class ExportCancelled(Exception):
    pass
