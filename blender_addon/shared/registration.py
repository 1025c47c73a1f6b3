"""Registering a package's modules, as Rigify's `operators/__init__.py` does."""


def module_registration(*modules):
    """register() and unregister() for a package: each module's register() in the order given,
    unregister() in reverse."""

    def register():
        for module in modules:
            module.register()

    def unregister():
        for module in reversed(modules):
            module.unregister()

    return register, unregister
