pytest_plugins = ["tests.fixtures.trees", "tests.fixtures.workers"]
