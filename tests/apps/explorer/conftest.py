import pytest
from django.contrib.auth.models import User

from tests.apps.explorer.factories import char_tokenizer, tiny_run


@pytest.fixture
def owner(db):
    return User.objects.create_user("ada", password="pw-analytical-1843")


@pytest.fixture
def run(owner):
    """A run of ada's with checkpoints at steps 0, 100 and 200."""
    return tiny_run(owner=owner, tokenizer=char_tokenizer())


@pytest.fixture
def ckpt(run):
    """The ref of the run's latest checkpoint."""
    return f"checkpoint:{run[1][-1].pk}"
