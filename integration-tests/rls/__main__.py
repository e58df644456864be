import sys

from rls.server import main

sys.exit(main())
