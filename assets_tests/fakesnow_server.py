"""fakesnow's server entry point, kept before anything imports its module.

`fakesnow.server` is a context-manager function until `fakesnow.server` the module is
imported (which fakesnow itself does on first use); from then on the package attribute
is the module and the function is unreachable. The root conftest imports this file first,
so every Snowflake-parity test starts servers through the same captured function.
"""

from __future__ import annotations

import atexit
import importlib

import fakesnow

start_server = fakesnow.server
if not callable(start_server):  # pragma: no cover - only if imported after the module
    raise RuntimeError(
        "fakesnow.server was already shadowed by its module; import assets_tests.fakesnow_server earlier"
    )
server_module = importlib.import_module("fakesnow.server")


def _remove_stage_dir() -> None:
    # fakesnow makes a temporary "stage bucket" folder when it is imported, and leaves it
    import shutil

    from fakesnow.transforms import stage

    shutil.rmtree(stage.LOCAL_BUCKET_PATH, ignore_errors=True)


atexit.register(_remove_stage_dir)
