"""Built-in OOD scorers.

Importing this package imports every module in it, so a scorer file dropped into this folder
registers itself through ``@register_scorer``. The built-in modules are imported first, in
``BUILTIN`` order (the order of ``scorers = "all"`` within each group, and of the result
tables); other files follow by name.
"""

import importlib
import pkgutil

BUILTIN = ("msp", "maxlogit", "energy", "gen", "klm", "gradnorm", "react", "ash", "scale", "dice",
           "ash_map", "vim", "knn", "nnguide", "mahalanobis", "rmds", "she", "fdbd", "odin")

for _name in (*BUILTIN, *sorted({m.name for m in pkgutil.iter_modules(__path__)} - set(BUILTIN))):
    importlib.import_module(f"{__name__}.{_name}")
