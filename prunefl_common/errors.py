"""The errors and exit codes every command of the project shares.

One exit-code table for ``prunefl-edge``, ``prunefl-coord`` and ``prunefl-sim``: scripts and systemd units read
these numbers, so they mean the same thing everywhere.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0  # done (or stopped by SIGTERM after finishing cleanly)
    USAGE = 2  # bad command line or configuration file, or a broken installation (no C core)
    DATA = 3  # a data set, model, profile or output directory that cannot be used
    BROKER = 4  # the MQTT broker is unreachable or refused us, or too few edges came
    INTERRUPTED = 130  # Ctrl-C / SIGINT


class InputError(ValueError):
    """A data set, model, partition or profile that cannot be used (exit code 3 in the CLIs)."""
