"""dist_train: one training loop from a CPU process to a multi-node GPU cluster.

Importing the package is cheap on purpose (no torch here): `dist-train --help` must answer in well under a second.
"""

__version__ = "0.2.0"
