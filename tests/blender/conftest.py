import pytest

from harness import build_extension


@pytest.fixture(scope="session", autouse=True)
def built_extension():
    """Build the zip once per run from the working tree, so the tests install what is checked out."""
    return build_extension()
