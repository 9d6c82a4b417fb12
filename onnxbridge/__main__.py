"""``python -m onnxbridge`` runs the command line."""

import sys

from onnxbridge.cli import main

sys.exit(main())
