import sys

from lst_fast.cli import main

sys.exit(main())
