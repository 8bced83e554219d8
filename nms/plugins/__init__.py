"""Monitoring plugins: executables that speak the JSON contract in docs/plugins.md.

`contract` holds the typed shapes of that contract, shared by the plugin pool
(`nms.plugin_pool`) and the plugins written in Python. `winrm` is the first plugin; run it as
``python -m nms.plugins.winrm``. Nothing here imports Django, so a plugin starts quickly and runs
without the project's settings.
"""
