"""`python -m ec2sim` entry point (what tests/ec2sim/run execs).

After main() has cleaned up (devices, files, server) the process leaves with
os._exit: tearing down moto's thousands of objects at interpreter exit would
otherwise add half a second to every test's teardown for nothing.
"""

import os
import sys

from .server import main

rc = main()
sys.stdout.flush()
sys.stderr.flush()
os._exit(rc)
