"""On-policy rates: does RKL trained by stochastic gradients attain the O(1/n) of its population objective?

Same as `synthalign run onpolicy-rates [options]` (the same options: --quick, --full, --replicates, --seed,
--out, --device, --set FIELD=VALUE); the experiment itself is synthalign/experiments/onpolicy_rates.py.
"""

import sys

from synthalign.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["run", "onpolicy-rates", *sys.argv[1:]]))
