"""gcp-storage-emulator that also honours `ifGenerationMatch` on uploads, as GCS does (test helper).

The emulator accepts and ignores preconditions (see tests/serve/test_log_writer.py), so a compare-and-swap
could not lose against it. GCS's documented behaviour is added here and nothing else: an upload whose
`ifGenerationMatch` differs from the object's current generation (0: the object must not exist) is answered
412 Precondition Failed with reason `conditionNotMet`. The emulator serves one request at a time, and the
check and the write happen in the same request, so check-then-write is atomic as on GCS.

Run as the emulator itself: `python _emulator_with_preconditions.py start --port N --in-memory`.
"""

from __future__ import annotations

import sys
from http import HTTPStatus

from gcp_storage_emulator import server
from gcp_storage_emulator.exceptions import NotFound
from gcp_storage_emulator.handlers import objects

_original_insert = objects.insert


def _object_name(request) -> str | None:
    if "name" in request.query:
        return request.query["name"][0]
    data = request.data
    if isinstance(data, dict):
        return (data.get("meta") or {}).get("name") or data.get("name")
    return None


def insert(request, response, storage, *args, **kwargs):
    wanted = request.query.get("ifGenerationMatch")
    name = _object_name(request)
    if wanted and name is not None:
        try:
            current = int(storage.get_file_obj(request.params["bucket_name"], name)["generation"])
        except NotFound:
            current = 0
        if int(wanted[0]) != current:
            message = "At least one of the pre-conditions you specified did not hold."
            response.status = HTTPStatus.PRECONDITION_FAILED
            response.json(
                {
                    "error": {
                        "code": 412,
                        "message": message,
                        "errors": [{"domain": "global", "reason": "conditionNotMet", "message": message}],
                    }
                }
            )
            return None
    return _original_insert(request, response, storage, *args, **kwargs)


objects.insert = insert  # the fallback route looks the handler up at request time
for _, handlers in server.HANDLERS:
    for method, handler in list(handlers.items()):
        if handler is _original_insert:
            handlers[method] = insert

if __name__ == "__main__":
    from gcp_storage_emulator.__main__ import main

    sys.exit(main(sys.argv[1:]))
