"""`python -m target_userpilot.emulator`: the same as the `userpilot-emulator` command."""

import sys

from target_userpilot.emulator.cli import main

sys.exit(main())
