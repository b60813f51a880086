"""`python -m mi_mergekit.cli …` is `mi-mergekit …`."""

import sys

from mi_mergekit.cli import main

sys.exit(main())
