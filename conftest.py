"""Root conftest: the shared test fixtures (tests/fixtures/) for every service's tests."""

# pytest's importlib mode names gateway/tests/test_x.py "gateway.tests.test_x" and would
# stand in an empty "gateway" module for the real package if the package were not imported
# yet; importing it first keeps `from gateway... import` working in the gateway's tests.
import gateway  # noqa: F401

pytest_plugins = [
    "tests.fixtures.redis",
    "tests.fixtures.processes",
    "tests.fixtures.cluster",
]
