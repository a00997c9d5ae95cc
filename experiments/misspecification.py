"""Misspecification: the approximation floor under the 1/n rate, and reward over-optimization.

Same as `synthalign run misspecification [options]` (the same options: --quick, --full, --replicates,
--seed, --out, --device, --set FIELD=VALUE); the experiment is synthalign/experiments/misspecification.py.
"""

import sys

from synthalign.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["run", "misspecification", *sys.argv[1:]]))
