"""Built-in OOD scorers.

Importing this package imports every module in it, so a scorer file dropped into this folder
registers itself through ``@register_scorer``.
"""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
