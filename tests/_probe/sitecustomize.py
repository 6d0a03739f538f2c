"""Test probe: record every module each Python process imports, with a finder first on `sys.meta_path`.

Put this folder first on PYTHONPATH and set IMAGENETTE_IMPORT_LOG_DIR: every interpreter started with that
environment (a server, its forked API server, its spawned inference workers) appends the name of each module
it imports to `<dir>/<pid>.txt` as the import starts (statements and `importlib.import_module` alike: both ask
every finder on `sys.meta_path`). The finder finds nothing itself, so imports proceed as usual. Nothing happens
without the variable.
"""

import os
import sys

_LOG_DIR = os.environ.get("IMAGENETTE_IMPORT_LOG_DIR")


class _ImportRecorder:
    """A meta-path finder that writes down each name it is asked for and lets the next finder find it."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        with open(os.path.join(_LOG_DIR, f"{os.getpid()}.txt"), "a") as log:
            log.write(f"{name}\n")
        return None


if _LOG_DIR:
    sys.meta_path.insert(0, _ImportRecorder())
