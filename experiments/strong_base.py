"""Strong base model (Thm 14): distillation on π0's responses, as π0 approaches π*.

Same as `synthalign run strong-base [options]` (the same options: --quick, --full, --replicates, --seed,
--out, --device, --set FIELD=VALUE); the experiment itself is synthalign/experiments/strong_base.py.
"""

import sys

from synthalign.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["run", "strong-base", *sys.argv[1:]]))
