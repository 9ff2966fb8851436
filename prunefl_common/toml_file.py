"""Reading a TOML configuration file with one clear error per way it can be unusable (the commands' config files)."""

from __future__ import annotations

import tomllib
from typing import Any


def read_toml(path: str, error: type[Exception], name: str, missing_hint: str = "",
              permission_hint: str = "") -> dict[str, Any]:
    """The file's table; ``error(message)`` when it is missing, a directory, unreadable, not UTF-8 or not TOML.
    ``name``: how messages call the file (e.g. "config file x.toml"); the hints follow the matching message."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError as e:
        raise error(f"{name} does not exist{missing_hint}") from e
    except PermissionError as e:
        raise error(f"{name} is not readable by this user{permission_hint}") from e
    except IsADirectoryError as e:
        raise error(f"{name} is a directory: give the TOML file in it") from e
    except OSError as e:
        raise error(f"{name}: cannot read it ({e.strerror or e})") from e
    except UnicodeDecodeError as e:
        raise error(f"{name} is not UTF-8 text (byte {e.start}): save it as UTF-8") from e
    except tomllib.TOMLDecodeError as e:
        raise error(f"{name} is not valid TOML: {e}") from e
