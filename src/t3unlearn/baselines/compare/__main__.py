"""One unit of ``t3unlearn compare`` in its own process (internal): its spec as JSON on standard input."""

import sys

from t3unlearn.baselines.compare.units import main

raise SystemExit(main(sys.argv[1:]))
