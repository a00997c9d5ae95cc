"""Prop. 15: reverse KL against forward KL for fitted policies, and the factor (4R ∨ 1) e^{8R+1}/R².

Same as `synthalign run prop15 [options]` (the same options: --quick, --full, --replicates, --seed,
--out, --device, --set FIELD=VALUE); the experiment itself is synthalign/experiments/prop15.py.
"""

import sys

from synthalign.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["run", "prop15", *sys.argv[1:]]))
