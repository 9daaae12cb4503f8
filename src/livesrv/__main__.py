import sys

from livesrv.cli import main

sys.exit(main())
