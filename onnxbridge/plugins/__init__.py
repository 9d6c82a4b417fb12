"""Built-in converter plugins.

The folder is named ``plugins``, not ``converters``: ``onnxbridge.converters()`` is the listing
function, and importing a subpackage of that name would shadow it.

Each module holds a light ``SPECS`` list (read at discovery) and a ``convert`` function that
imports its framework only when called. They are registered through the same
``onnxbridge.converters`` entry-point group a third-party plugin uses (see pyproject.toml).
"""
