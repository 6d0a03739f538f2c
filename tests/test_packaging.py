"""The package declares what it imports: each extra, installed alone into a fresh venv, imports what it promises.

`EXTRA_MODULES` says which modules each extra promises; every other module of the package is the core's and must
import with the core dependencies alone. The fast test reads the sources: every import must be declared by the
core or by the module's extra, except an import inside a function that reaches another extra's feature
(`OTHER_EXTRA_FEATURES`: the Ray engine, Google Cloud Storage), which that extra must declare. The slow
test builds the venvs for real: one venv with the core dependencies, hard-linked into one venv per extra (pip
replaces files rather than writing into them, so the base stays intact), where pip installs the project's wheel
with that extra and a fresh interpreter imports every promised module. The venvs are cached under pytest's cache
dir until pyproject.toml changes (about 14 minutes to build on a busy 2-core machine, then about 2).
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable
from functools import cache
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.conftest import REPO

PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
SRC = REPO / "src"
APP = REPO / "app"
PACKAGE = "imagenette_drift"
# extra -> the modules (and package prefixes) it promises; the app's modules are scripts in app/.
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "serve": ("imagenette_drift.serve", "imagenette_drift.commands.serve", "imagenette_drift.inference_log"),
    "monitor": (
        "imagenette_drift.monitoring",
        "imagenette_drift.release",
        "imagenette_drift.inference_log",
        "imagenette_drift.commands.monitor",
        "imagenette_drift.commands.gate",
        "imagenette_drift.commands.canary",
        "imagenette_drift.commands.export_labelled",
        "imagenette_drift.storage.filesystem",  # gcsfs/fsspec: how DuckDB and Ray Data read a gs:// log
    ),
    "scale": ("imagenette_drift.monitoring.engines", "ray.data"),
    "corruptions": ("imagenette_drift.corruptions",),
    "app": ("app", "api_client", "backend", "display", "local_model"),
    "mlops": ("dvc.cli",),
    "bench": ("torchdrift",),
}
NOT_PROMISED = {"dev"}  # test tooling, not a feature
# Imports inside functions that reach another extra's feature (top-level name -> that extra): the Ray engine of
# the monitor, Google Cloud Storage for gs:// paths, the corruptions of drift experiments.
OTHER_EXTRA_FEATURES = {
    "ray": "scale",
    "google": "serve",
    "google_crc32c": "serve",
    "corrupt_tta": "corruptions",
    "gcsfs": "monitor",  # storage.errors names a gcsfs failure when the monitor's log reader raised one
    "aiohttp": "monitor",
    "requests": "serve",
}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@cache
def declared(extra: str) -> frozenset[str]:
    """Distributions (canonical names) that `pip install imagenette-drift[extra]` asks for by name ("" = core)."""
    names = set()
    for text in PROJECT["optional-dependencies"][extra] if extra else PROJECT["dependencies"]:
        requirement = Requirement(text)
        if _canonical(requirement.name) == _canonical(PROJECT["name"]):
            names |= set().union(*(declared(e) for e in requirement.extras))
        else:
            names.add(_canonical(requirement.name))
    return frozenset(names | (declared("") if extra else set()))


def _module_files() -> dict[str, Path]:
    """Module name -> source file, for the package (src/) and the app's scripts (app/)."""
    files = {".".join(p.relative_to(SRC).with_suffix("").parts): p for p in (SRC / PACKAGE).rglob("*.py")}
    files = {name.removesuffix(".__init__"): path for name, path in files.items()}
    return files | {p.stem: p for p in APP.glob("*.py")}


def extras_of(module: str) -> set[str]:
    """The extras that promise `module` (or a package holding it); empty for the core's modules."""
    return {
        extra
        for extra, prefixes in EXTRA_MODULES.items()
        if any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes)
    }


def third_party_imports(path: Path) -> list[tuple[str, bool]]:
    """(module, lazy) for each absolute import of another project in `path`; lazy = inside a function.

    Imports under `if TYPE_CHECKING:` are skipped: they never run.
    """
    first_party = {PACKAGE, *(p.stem for p in APP.glob("*.py"))}
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            inner = lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                found.extend((alias.name, inner) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                found.append((child.module, inner))
            visit(child, inner)

    visit(ast.parse(path.read_text()), False)
    top = lambda name: name.split(".")[0]  # noqa: E731
    return [(n, lazy) for n, lazy in found if top(n) not in sys.stdlib_module_names | first_party]


@cache
def _providers() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def distributions(module: str) -> frozenset[str]:
    """The installed distributions (canonical names) that provide `module`'s top-level package."""
    return frozenset(_canonical(d) for d in _providers().get(module.split(".")[0], []))


def test_every_promised_module_exists() -> None:
    files = _module_files()
    for extra, modules in EXTRA_MODULES.items():
        assert extra in PROJECT["optional-dependencies"], f"EXTRA_MODULES names {extra!r}, not in pyproject"
        ours = [m for m in modules if m.startswith(PACKAGE) or m in files]
        assert all(m in files for m in ours), f"{extra}: {[m for m in ours if m not in files]} do not exist"
    assert set(PROJECT["optional-dependencies"]) - NOT_PROMISED == set(EXTRA_MODULES)


def test_every_import_is_declared_by_the_extra_that_promises_it() -> None:
    wrong = []
    for module, path in sorted(_module_files().items()):
        for name, lazy in third_party_imports(path):
            other = OTHER_EXTRA_FEATURES.get(name.split(".")[0]) if lazy else None
            for extra in {other} if other else extras_of(module) or {""}:
                if not distributions(name) & declared(extra):
                    where = f"the {extra or 'core'} dependencies"
                    wrong.append(f"{module} imports {name} ({sorted(distributions(name))}), not in {where}")
    assert not wrong, "\n".join(wrong)


# Run by a fresh interpreter in the extra's venv: import each module, and every module of each package in
# `walk`; print the failures as JSON.
_PROBE = """
import importlib, json, pkgutil, sys, traceback
asked, failures = json.loads(sys.argv[1]), {}
def load(name, walk):
    try:
        module = importlib.import_module(name)
    except BaseException as e:
        failures[name] = traceback.format_exception_only(e)[-1].strip()
        return
    if walk and hasattr(module, "__path__"):
        for info in pkgutil.walk_packages(module.__path__, name + "."):
            load(info.name, False)
for name in asked["single"]:
    load(name, False)
for name in asked["walk"]:
    load(name, True)
print(json.dumps(failures))
"""


def _run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=1200, **kwargs)
    assert done.returncode == 0, (
        f"{' '.join(map(str, argv[:6]))} ... exit {done.returncode}:\n{done.stderr[-3000:]}"
    )
    return done


def _key(*parts: object) -> str:
    return hashlib.sha256(json.dumps([sys.version_info[:2], *parts], sort_keys=True).encode()).hexdigest()[
        :12
    ]


def _cached_venv(root: Path, name: str, key: str, build: Callable[[Path], None]) -> tuple[Path, bool]:
    """The venv `root/name-key`, built by `build` unless a complete one is there; older keys are removed.

    Returns (the venv, whether it was built now).
    """
    venv = root / f"{name}-{key}"
    if (venv / ".complete").is_file():
        return venv, False
    for stale in root.glob(f"{name}-*"):
        shutil.rmtree(stale, ignore_errors=True)
    build(venv)
    (venv / ".complete").touch()
    return venv, True


@pytest.fixture(scope="module")
def venvs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(the cache folder, the venv with the core dependencies only, a wheel of the project as it is now)."""
    # Outside the clone, so that CI's fresh clones on one machine reuse it (cold: about 8 minutes of pip).
    root = Path(
        os.environ.get("IMAGENETTE_EXTRAS_CACHE") or Path.home() / ".cache" / "imagenette-drift" / "extras"
    )
    root.mkdir(parents=True, exist_ok=True)

    def build(venv: Path) -> None:
        _run([sys.executable, "-m", "venv", str(venv)])
        _run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *PROJECT["dependencies"]])

    base, _ = _cached_venv(root, "base", _key(PROJECT["dependencies"]), build)
    # Built from a copy: setuptools leaves build/ and *.egg-info beside the sources it builds.
    tree, wheels = tmp_path_factory.mktemp("tree"), tmp_path_factory.mktemp("wheel")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, tree)
    shutil.copytree(SRC, tree / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    _run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", wheels, tree]
    )
    return root, base, next(wheels.glob("*.whl"))


@pytest.mark.slow
@pytest.mark.parametrize("extra", ["", *EXTRA_MODULES])
def test_each_extra_installed_alone_imports_what_it_promises(extra: str, venvs, tmp_path: Path) -> None:
    root, base, wheel = venvs
    requirement = f"{wheel}[{extra}]" if extra else str(wheel)

    def build(venv: Path) -> None:
        _run(["cp", "-al", str(base), str(venv)])  # hard links: seconds, not a 5 GB copy
        _run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", requirement])

    # Cached while the dependencies stay the same; the project itself is reinstalled from this run's wheel.
    venv, built = _cached_venv(
        root, extra or "core", _key(PROJECT["dependencies"], PROJECT["optional-dependencies"]), build
    )
    python = str(venv / "bin" / "python")
    if not built:
        _run([python, "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", str(wheel)])
    files = _module_files()
    if extra:
        promised = [m for m in files if extra in extras_of(m)]
        asked = {"walk": [m for m in EXTRA_MODULES[extra] if m.startswith(PACKAGE)], "single": []}
        asked["single"] = [m for m in EXTRA_MODULES[extra] if not m.startswith(PACKAGE)]
    else:  # the core: every module of the package that no extra promises
        promised = [
            m for m in files if m.startswith(PACKAGE) and not extras_of(m) and m != f"{PACKAGE}.__main__"
        ]
        asked = {"walk": [], "single": promised}
    # The optional imports inside functions that this extra declares (an extra's own feature) must work too.
    asked["single"] += sorted(
        {
            name
            for module in promised
            for name, lazy in third_party_imports(files[module])
            if lazy and distributions(name) & declared(extra)
        }
    )
    cwd = APP if extra == "app" else tmp_path  # the app's scripts run from app/; the package from the venv
    done = _run([python, "-c", _PROBE, json.dumps(asked)], cwd=cwd)
    failures = json.loads(done.stdout.strip().splitlines()[-1])
    assert not failures, f"with imagenette-drift[{extra}] alone: {json.dumps(failures, indent=1)}"
