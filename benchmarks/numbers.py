"""``python benchmarks/numbers.py ...`` runs the numbers benchmark, :mod:`number_reading` (see its docstring).

Run as a script, this folder comes first on ``sys.path``, where this file would shadow the standard
library's ``numbers`` (which NumPy imports); so it moves the folder behind the standard library first.
"""

import os
import runpy
import sys

if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here] + [here]
    runpy.run_path(os.path.join(here, "number_reading.py"), run_name="__main__")
