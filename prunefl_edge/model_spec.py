"""Moved to :mod:`prunefl_common.model_spec` (both sides describe models); this name stays for one release."""

from prunefl_common.model_spec import *  # noqa: F403
