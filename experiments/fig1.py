"""Figure 1 of the paper (spec §5): RLHF with beta tuned per n saturates, RKL keeps falling.

Same as `synthalign run fig1 [options]` (the same options: --quick, --full, --replicates, --seed,
--out, --device, --set FIELD=VALUE); the experiment itself is synthalign/experiments/fig1.py.
"""

import sys

from synthalign.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["run", "fig1", *sys.argv[1:]]))
