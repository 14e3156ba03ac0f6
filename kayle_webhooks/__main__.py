import sys

from kayle_webhooks.cli import main

sys.exit(main())
