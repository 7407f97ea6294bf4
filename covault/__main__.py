import sys

from covault.cli import main

sys.exit(main())
