import marionette_test_package_that_is_not_installed  # noqa: F401


class Engine:
    pass
