import sys

from jaxpart.cli.main import main

sys.exit(main())
