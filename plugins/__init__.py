"""The default plugins: each module is one built-in behaviour, registered like any other
plugin. Copy one into a ``headwater_hooks.py`` to change it; disable one by name with
``HEADWATER_DISABLE_PLUGINS``.
"""
