"""One unit of ``t3unlearn compare`` in its own process (internal): its spec as JSON on standard input."""

import os
import sys

from t3unlearn.experiments.compare.units import PARENT_ENV, exit_with_parent, main

exit_with_parent(int(os.environ.get(PARENT_ENV) or os.getppid()))  # first: die with the driver
raise SystemExit(main(sys.argv[1:]))
