"""``python benchmarks/numbers.py ...`` runs the numbers benchmark, :mod:`number_reading` (see its docstring).

This file shares its name with the standard library's ``numbers``, and a script run from this folder
has the folder first on ``sys.path``: NumPy's ``import numbers`` then finds this file. Imported like
that, it loads the standard library's module and stands aside for it; run as a script, it moves the
folder behind the standard library and runs the benchmark.
"""

import importlib.util
import os
import sys
import sysconfig

if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here] + [here]
    sys.modules.pop("numbers", None)
    import runpy

    runpy.run_path(os.path.join(here, "number_reading.py"), run_name="__main__")
else:  # imported as ``numbers`` by NumPy in a script of this folder: be the standard library's module
    _spec = importlib.util.spec_from_file_location(
        "numbers", os.path.join(sysconfig.get_paths()["stdlib"], "numbers.py")
    )
    assert _spec is not None and _spec.loader is not None
    _real = importlib.util.module_from_spec(_spec)
    sys.modules[__name__] = _real
    _spec.loader.exec_module(_real)
    globals().update({k: v for k, v in vars(_real).items() if not k.startswith("__")})
