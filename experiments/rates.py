"""Rates: PMLE, distillation and RKL converge at rate 1/n and respect the explicit bounds (spec §4).

Same as `synthalign run rates [options]` (the same options: --quick, --full, --replicates, --seed,
--out, --device, --set FIELD=VALUE); the experiment itself is synthalign/experiments/rates.py.
"""

import sys

from synthalign.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["run", "rates", *sys.argv[1:]]))
