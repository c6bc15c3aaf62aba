from tests.data_fixtures import *  # noqa: F401,F403
