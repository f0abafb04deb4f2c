"""Make ``import r2l`` load the package of this checkout, first on the path.

Snakemake appends this folder to ``sys.path`` before it runs a rule's script, so every script imports this
module first. Then a rule runs the code next to the Snakefile whether r2l is installed in its environment
(a venv with ``pip install -e .``) or not (a ``--sdm conda`` env built from ``workflow/envs/r2l.yaml``).
"""

import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[2])  # the repository: workflow/scripts/_checkout.py -> ../..
if sys.path[:1] != [ROOT]:
    sys.path.insert(0, ROOT)
