"""Stop a rule script with one clear line when the r2l package is not installed in the job's Python.

Snakemake puts this folder on ``sys.path`` before it runs a rule's script, so every script imports this module
first. The scripts run the installed package: ``pip install -e .`` in the checkout (``make`` does it), or under
``--sdm conda`` workflow/envs/r2l.post-deploy.sh in each rule's env. An r2l installed from elsewhere (not this
checkout) runs, with a warning naming both folders.
"""

import importlib.util
import sys
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[2]  # workflow/scripts/_require_r2l.py -> the repository

_spec = importlib.util.find_spec("r2l")
if _spec is None:
    sys.exit(f"r2l: the r2l package is not installed in this job's Python ({sys.executable}); "
             f"install it from the checkout: pip install -e {CHECKOUT}")
if _spec.origin and Path(_spec.origin).resolve().parent != CHECKOUT / "r2l":
    print(f"r2l: warning: this job runs the r2l installed at {Path(_spec.origin).parent}, not the code of this "
          f"checkout ({CHECKOUT}); pip install -e {CHECKOUT} to run it", file=sys.stderr)
