"""The registry's interface: register an exported checkpoint, list and show versions, promote a champion.

A version is the first 12 hex digits of the sha256 of its serving copy (`imagenette export`), stored as
`<root>/<version>/model.ckpt` beside `<root>/<version>/metadata.json` (written last: a version without it is
not registered). `<root>/champion` is a small JSON pointer, replaced only by compare-and-swap on its
generation (GCS's `if_generation_match`; a file lock and a counter locally), so two promotions cannot race:
exactly one wins and the other raises `PromotionConflict`.
"""

from __future__ import annotations

import json
import random
import tempfile
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from imagenette_drift.errors import UserError

VERSION_DIGITS: Final = 12
CHECKPOINT_NAME: Final = "model.ckpt"
METADATA_NAME: Final = "metadata.json"
CHAMPION_NAME: Final = "champion"
ANY: Final = object()  # `promote(expected_champion=ANY)`: whatever the champion is when the swap happens


class RegistryError(UserError, ValueError):
    """A registry operation cannot be done as asked (unknown version, bad location); the message says why."""


class PromotionConflict(UserError, RuntimeError):
    """The champion changed (or is not the one expected) while promoting; gate against the new one, retry."""


@dataclass(frozen=True)
class ModelVersion:
    """A registered model: its version (sha12), where its checkpoint lives, and its metadata.json."""

    version: str
    uri: str
    metadata: dict[str, Any]


@dataclass(frozen=True)
class Champion:
    """The champion pointer: the serving version, when and after whom it was promoted, and its generation."""

    version: str
    promoted_at: str
    previous: str | None
    generation: int


class Registry(ABC):
    """Shared logic over five storage primitives that each back end implements (see the module docstring)."""

    location: str

    # -- storage primitives -------------------------------------------------------------------------------
    @abstractmethod
    def _put_new(self, name: str, source: Path) -> bool:
        """Store the file `source` as `name` unless `name` exists; False when it already existed."""

    @abstractmethod
    def _read(self, name: str) -> tuple[bytes, int] | None:
        """(bytes, generation) of object `name`, or None when it does not exist."""

    @abstractmethod
    def _swap(self, name: str, data: bytes, generation: int) -> int:
        """Replace `name` with `data` only if its generation is still `generation` (0: it must not exist);
        return the new generation; raise `PromotionConflict` otherwise."""

    @abstractmethod
    def _versions(self) -> list[str]:
        """The version folders present (registered or not)."""

    @abstractmethod
    def fetch(self, version: str, cache_dir: Path) -> Path:
        """A local path to `version`'s model.ckpt (downloaded into `cache_dir` when remote)."""

    @abstractmethod
    def _uri(self, name: str) -> str:
        """The location of object `name` as users see it (a path or gs:// URI)."""

    # -- operations ------------------------------------------------------------------------------------------
    def register(
        self, checkpoint: Path, config: Path | None = None, repo: Path = Path(".")
    ) -> tuple[ModelVersion, bool]:
        """Export `checkpoint` (weights and card only) and store it with its metadata.

        Returns the version and whether it was new (registering the same weights again is a no-op).
        Raises `MissingCheckpointError`/`BadCheckpointError` for a bad checkpoint, `RegistryError` for a bad
        config file.
        """
        from imagenette_drift.checkpoint import export_checkpoint
        from imagenette_drift.registry.lineage import build_metadata

        with tempfile.TemporaryDirectory(prefix="imagenette-register-") as tmp:
            exported = Path(tmp) / CHECKPOINT_NAME
            result = export_checkpoint(checkpoint, exported)
            version = str(result["sha256"])[:VERSION_DIGITS]
            metadata = build_metadata(exported, str(result["sha256"]), checkpoint, config, repo)
            metadata["uri"] = self._uri(f"{version}/{CHECKPOINT_NAME}")
            self._put_new(f"{version}/{CHECKPOINT_NAME}", exported)
            meta_path = Path(tmp) / METADATA_NAME
            meta_path.write_text(json.dumps(metadata, indent=2, sort_keys=True))
            new = self._put_new(f"{version}/{METADATA_NAME}", meta_path)
        return self.show(version), new

    def list(self) -> list[ModelVersion]:
        """Every registered version, oldest registration first."""
        found = [self._load(v) for v in self._versions()]
        registered = [v for v in found if v is not None]
        return sorted(registered, key=lambda v: (v.metadata.get("registered_at", ""), v.version))

    def show(self, version: str) -> ModelVersion:
        """The registered `version` (a sha12, a longer sha256 prefix, or `champion`)."""
        version = self.resolve(version)
        found = self._load(version)
        if found is None:
            known = ", ".join(v.version for v in self.list()) or "none yet"
            raise RegistryError(
                f"version {version!r} is not registered in {self.location} (registered: {known}); "
                "register it with `imagenette registry register`."
            )
        return found

    def resolve(self, version: str) -> str:
        """`champion` -> the champion's version; a sha256 (prefix) -> its first 12 digits."""
        if version == CHAMPION_NAME:
            current = self.champion()
            if current is None:
                raise RegistryError(f"{self.location} has no champion yet; promote one first.")
            return current.version
        if len(version) < VERSION_DIGITS or any(c not in "0123456789abcdef" for c in version.lower()):
            raise RegistryError(
                f"{version!r} is not a version: expected the first {VERSION_DIGITS} hex digits of a sha256 "
                "(as `imagenette registry list` prints) or `champion`."
            )
        return version.lower()[:VERSION_DIGITS]

    def champion(self) -> Champion | None:
        """The current champion pointer, or None before the first promotion."""
        found = self._read(CHAMPION_NAME)
        if found is None:
            return None
        data, generation = found
        pointer = json.loads(data)
        return Champion(pointer["version"], pointer["promoted_at"], pointer.get("previous"), generation)

    def promote(self, version: str, expected_champion: str | object | None = ANY) -> Champion:
        """Make `version` the champion by compare-and-swap on the pointer's generation.

        `expected_champion` (a version, or None for "no champion yet") refuses the promotion unless the
        champion is still the one the candidate was gated against. Raises `PromotionConflict` when the
        pointer is not the expected one or changed between reading and writing it.
        """
        target = self.show(version).version
        current = self.champion()
        current_version = None if current is None else current.version
        if expected_champion is not ANY:
            expected = None if expected_champion is None else self.resolve(str(expected_champion))
            if expected != current_version:
                raise PromotionConflict(
                    f"cannot promote {target}: the champion is {current_version or 'none'}, not the expected "
                    f"{expected or 'none'} (another promotion landed first); gate {target} against the current "
                    "champion and promote again."
                )
        if current is not None and current.version == target:
            return current
        pointer = {
            "version": target,
            "promoted_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "previous": current_version,
        }
        data = json.dumps(pointer, sort_keys=True).encode()
        generation = self._swap(CHAMPION_NAME, data, 0 if current is None else current.generation)
        return Champion(target, pointer["promoted_at"], current_version, generation)

    def append(self, name: str, data: bytes, attempts: int = 20) -> None:
        """Append `data` to the small object `name` at the registry's root (created when missing), by
        compare-and-swap on its generation, retried with jittered backoff when another writer got in first:
        concurrent appends never lose data. Raises `PromotionConflict` after `attempts` lost races."""
        for attempt in range(attempts):
            found = self._read(name)
            current, generation = found if found is not None else (b"", 0)
            try:
                self._swap(name, current + data, generation)
                return
            except PromotionConflict:
                time.sleep(random.uniform(0, 0.01 * (attempt + 1)))
        raise PromotionConflict(
            f"could not append to {self.location}/{name}: {attempts} writers got in first; retry."
        )

    def read_object(self, name: str) -> bytes | None:
        """The bytes of object `name` at the registry's root, or None when it does not exist."""
        found = self._read(name)
        return None if found is None else found[0]

    def _load(self, version: str) -> ModelVersion | None:
        found = self._read(f"{version}/{METADATA_NAME}")
        if found is None:
            return None
        metadata = json.loads(found[0])
        return ModelVersion(version, self._uri(f"{version}/{CHECKPOINT_NAME}"), metadata)


def conflict(name: str, location: str, generation: int) -> PromotionConflict:
    """The error of a lost compare-and-swap."""
    return PromotionConflict(
        f"{location}/{name} changed while promoting (expected generation {generation}): another promotion won "
        "the race. Run `imagenette registry show champion`, gate against it, and promote again."
    )
