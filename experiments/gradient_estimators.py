"""Gradient estimators: what REINFORCE and RLOO with k1/k2/k3 KL estimators follow, exactly (spec §6 item 14).

Same as `synthalign run gradient-estimators [options]` (the same options: --quick, --full, --replicates, --seed,
--out, --device, --set FIELD=VALUE); the experiment itself is synthalign/experiments/gradient_estimators.py.
"""

import sys

from synthalign.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["run", "gradient-estimators", *sys.argv[1:]]))
