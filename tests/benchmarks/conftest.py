from tests.data_fixtures import user  # noqa: F401
