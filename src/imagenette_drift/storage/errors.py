"""`StorageError`, and the one place where google-cloud-storage's and gcsfs's exceptions become it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

from imagenette_drift.errors import UserError

PERMISSION_FIX = (
    "grant the credentials in use a storage role on the bucket (roles/storage.objectViewer to read, "
    "roles/storage.objectAdmin to write), or run `gcloud auth application-default login`"
)
UNREACHABLE_FIX = "check the network (or STORAGE_EMULATOR_HOST) and try again"


class StorageError(UserError, RuntimeError):
    """A gs:// (or log folder) location could not be read or written; the one-line message names the bucket,
    the object and the cause, and says what to do."""


@contextlib.contextmanager
def gcs_errors(what: str, uri: str) -> Iterator[None]:
    """Raise a failure of google-cloud-storage or gcsfs inside the block as `StorageError`:
    `cannot <what> <uri>: <cause>`. Exceptions of neither library (our own bugs) pass through unchanged, and so
    does `FileNotFoundError` of an object (a vanished file is the caller's to handle)."""
    try:
        yield
    except StorageError:
        raise
    except Exception as e:
        cause = describe(e)
        if cause is None:
            raise
        raise StorageError(f"cannot {what} {uri}: {cause}") from e


def describe(error: BaseException) -> str | None:
    """The cause and fix of a storage library's exception in a few words, or None for any other exception."""
    from google.api_core import exceptions as gexc
    from google.auth import exceptions as auth_exc

    if isinstance(error, gexc.Forbidden | gexc.Unauthorized):
        return f"permission denied ({_detail(error)}); {PERMISSION_FIX}."
    if isinstance(error, auth_exc.DefaultCredentialsError | auth_exc.RefreshError):
        return f"no usable credentials ({_detail(error)}); {PERMISSION_FIX}."
    if isinstance(error, gexc.NotFound):
        return f"not found ({_detail(error)})."
    if isinstance(error, transient_errors()):
        return f"GCS is unreachable ({type(error).__name__}: {_detail(error)}); {UNREACHABLE_FIX}."
    if isinstance(error, gexc.GoogleAPICallError):
        return f"GCS answered {error.code}: {_detail(error)}."
    return _describe_gcsfs(error)


def _describe_gcsfs(error: BaseException) -> str | None:
    try:
        from gcsfs.retry import HttpError
    except ImportError:  # the `monitor` extra is not installed: gcsfs raised nothing
        return None
    if isinstance(error, FileNotFoundError):
        return None
    if isinstance(error, PermissionError) or (
        isinstance(error, OSError) and str(error).startswith("Forbidden")
    ):
        return f"permission denied ({_detail(error)}); {PERMISSION_FIX}."
    if isinstance(error, HttpError):
        return f"GCS answered {error.code}: {_detail(error)}."
    return None


def transient_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean GCS could not be reached (after the libraries' own retries)."""
    import requests
    from google.api_core import exceptions as gexc

    found: tuple[type[BaseException], ...] = (
        gexc.RetryError,  # the library's retries ran out of their deadline
        requests.ConnectionError,
        requests.Timeout,
        ConnectionError,
        TimeoutError,
        asyncio.TimeoutError,
        gexc.TooManyRequests,
        gexc.InternalServerError,
        gexc.BadGateway,
        gexc.ServiceUnavailable,
        gexc.GatewayTimeout,
    )
    with contextlib.suppress(ImportError):  # gcsfs's transport
        from aiohttp import ClientConnectionError

        found += (ClientConnectionError,)
    return found


def _detail(error: BaseException) -> str:
    text = getattr(error, "message", None) or str(error) or type(error).__name__
    cause = getattr(error, "cause", None)  # RetryError: the last error the retries met
    if isinstance(cause, BaseException):
        text = f"{text}; last error: {type(cause).__name__}: {cause}"
    return " ".join(str(text).split())
