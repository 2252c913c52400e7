import sys

from skelfast.cli import main

sys.exit(main())
