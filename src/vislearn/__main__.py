import sys

from vislearn.cli import main

sys.exit(main())
