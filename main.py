"""Start SD Studio: `python main.py` (see sdstudio/ui/app.py for the options)."""

import sys

from sdstudio.ui.app import run_app

if __name__ == "__main__":
    sys.exit(run_app(sys.argv[1:]))
