"""On-policy gap (spec §4): PMLE pays the coverage and size of the whole class Π, RKL only the reward class's.

Same as `synthalign run onpolicy-gap [options]` (the same options: --quick, --full, --replicates, --seed,
--out, --device, --set FIELD=VALUE); the experiment itself is synthalign/experiments/onpolicy_gap.py.
"""

import sys

from synthalign.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["run", "onpolicy-gap", *sys.argv[1:]]))
