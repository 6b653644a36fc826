import sys

from casebridge.cli import main

sys.exit(main())
