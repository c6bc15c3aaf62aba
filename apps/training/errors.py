"""Training's exceptions, importable by its services, selectors, views and other apps without importing either."""


class TrainingError(ValueError):
    """A request about a run that cannot be done; the message says why and what to do instead. `field` names the
    form field at fault, when there is one."""

    def __init__(self, message: str, *, field: str | None = None):
        super().__init__(message)
        self.field = field


class RunNotFound(TrainingError):
    """No such run, or not one the user may see (the two are not told apart)."""
