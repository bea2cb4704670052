"""``python -m vgrout_ray COMMAND ...``: the ``vgrout`` command line."""
import sys

from vgrout_ray.cli import main

sys.exit(main())
