"""Start SD Studio: `python main.py` (see sdstudio/ui/app.py for the options).

Through sdstudio.cli.run_gui, as `sdstudio` and `python -m sdstudio` do: where Qt cannot open a window it
says why instead of aborting.
"""

import sys

from sdstudio.cli import run_gui

if __name__ == "__main__":
    sys.exit(run_gui(sys.argv[1:]))
