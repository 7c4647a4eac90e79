import sys

from emotalk.cli.main import main

sys.exit(main())
