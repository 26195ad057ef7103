"""Root conftest: the shared test fixtures (tests/fixtures/) for every service's tests."""

pytest_plugins = [
    "tests.fixtures.package_order",
    "tests.fixtures.redis",
    "tests.fixtures.processes",
    "tests.fixtures.cluster",
]
