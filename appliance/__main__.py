"""`python -m appliance` runs the CLI."""

import sys

from appliance.cli import main

sys.exit(main())
