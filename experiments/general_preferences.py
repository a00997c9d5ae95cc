"""General preferences: duality gaps of Nash-style methods and DPO/RKL on random and cyclic P.

Same as `synthalign run general-preferences [options]` (the same options: --quick, --full, --replicates,
--seed, --out, --device, --set FIELD=VALUE); the experiment is synthalign/experiments/general_preferences.py.
"""

import sys

from synthalign.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["run", "general-preferences", *sys.argv[1:]]))
