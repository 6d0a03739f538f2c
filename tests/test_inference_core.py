"""Serving and monitoring load the inference core only: no Lightning, torchmetrics, W&B or corruption adapter.

Checked in real processes: a running `imagenette serve` (its inference worker included), `imagenette drift`,
and the app's in-process mode, each recording the modules it imports (`tests/_probe`). Also: no import cycles
among the package's modules.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import requests

from tests._imports import imported_modules, probe_env, training_stack
from tests.serve._server import IMAGENETTE, ServeProcess

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "imagenette_drift"
CORE = [
    "imagenette_drift.card",
    "imagenette_drift.checkpoint",
    "imagenette_drift.monitor_contract",
    "imagenette_drift.serve_contract",
    "imagenette_drift.hashing",
    "imagenette_drift.models.net",
    "imagenette_drift.data.images",
    "imagenette_drift.drift.reference",
    "imagenette_drift.drift.windows",
    "imagenette_drift.reports.drift",
    "imagenette_drift.embedding",
    "imagenette_drift.serve.api",
    "imagenette_drift.serve.app",
    "imagenette_drift.storage.checkpoint",
    "imagenette_drift.storage.probe",
    "imagenette_drift.commands.serve",
    "imagenette_drift.commands.drift",
    "imagenette_drift.commands.export",
]


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports anywhere in its body (function-level imports count)."""
    modules = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets |= {f"{node.module}.{alias.name}" for alias in node.names} | {node.module}
        graph[name] = {t for t in targets if t in modules and t != name and not name.startswith(f"{t}.")}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle found by a depth-first search, each as the list of modules around it."""
    cycles, state, stack = [], {}, []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                cycles.append([*stack[stack.index(target) :], target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return cycles


def test_the_package_has_no_import_cycles() -> None:
    graph = _import_graph()
    assert "imagenette_drift.training_cli" in graph and graph["imagenette_drift.cli"]  # the graph is real
    assert _cycles(graph) == []


COMMANDS = "imagenette_drift.commands"


def _backward_imports(graph: dict[str, set[str]]) -> dict[str, list[str]]:
    """Library module -> the command modules it imports: commands use libraries, never the reverse."""
    libraries = {n: t for n, t in graph.items() if not n.startswith(COMMANDS) and n != "imagenette_drift.cli"}
    found = {
        name: sorted(t for t in targets if t.startswith(COMMANDS)) for name, targets in libraries.items()
    }
    return {name: commands for name, commands in found.items() if commands}


def test_libraries_never_import_commands() -> None:
    graph = _import_graph()
    assert "imagenette_drift.registry.base" in graph and "imagenette_drift.commands.export" in graph
    assert _backward_imports(graph) == {}


def test_a_backward_import_is_found_when_there_is_one() -> None:
    graph = {"imagenette_drift.drift.x": {"imagenette_drift.commands.drift"}, "imagenette_drift.cli": set()}
    graph["imagenette_drift.commands.drift"] = {"imagenette_drift.drift.x"}
    assert _backward_imports(graph) == {"imagenette_drift.drift.x": ["imagenette_drift.commands.drift"]}


def test_a_cycle_is_found_when_there_is_one() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c", "a"]]


def test_the_inference_core_imports_no_training_stack(tmp_path: Path) -> None:
    logs = tmp_path / "imports"
    code = "import importlib, sys; [importlib.import_module(m) for m in sys.argv[1:]]"
    subprocess.run([sys.executable, "-c", code, *CORE], env=probe_env(logs), check=True, timeout=300)
    (modules,) = imported_modules(logs).values()
    assert set(CORE) <= modules and "torch" in modules and "litserve" in modules
    assert training_stack(modules) == []


@pytest.mark.slow
def test_a_serving_worker_loads_no_training_stack(
    trained_checkpoint: Path, tmp_path: Path, sample_root: Path
) -> None:
    logs = tmp_path / "imports"
    image = min((sample_root / "val").rglob("*.JPEG"))
    args = ("--cache_dir", str(tmp_path / "cache"))
    with ServeProcess(trained_checkpoint, tmp_path / "server.log", *args, env=probe_env(logs)) as server:
        reply = requests.post(f"{server.url}/predict", files={"file": image.read_bytes()}, timeout=60)
        assert reply.status_code == 200, reply.text
        children = psutil.Process(server.process.pid).children(recursive=True)
        workers = [p.pid for p in children if "multiprocessing.spawn" in " ".join(p.cmdline())]
    modules = imported_modules(logs)
    worker = set().union(*(modules[pid] for pid in workers if pid in modules))
    # The probe saw the worker load the model and answer: a worker with no record would pass vacuously.
    assert {
        "torch",
        "timm",
        "litserve",
        "imagenette_drift.serve.api",
        "imagenette_drift.checkpoint",
    } <= worker
    assert training_stack(worker) == []
    assert {pid: training_stack(names) for pid, names in modules.items() if training_stack(names)} == {}


@pytest.mark.slow
def test_imagenette_drift_loads_no_training_stack(
    trained_checkpoint: Path, tmp_path: Path, sample_root
) -> None:
    logs = tmp_path / "imports"
    command = [
        str(IMAGENETTE),
        "drift",
        "--ckpt_path",
        str(trained_checkpoint),
        "--data.predict_dir",
        str(sample_root / "val"),
    ]
    command += ["--limit", "8", "--output", str(tmp_path / "report"), "--threads", "1"]
    subprocess.run(command, env=probe_env(logs), check=True, timeout=300, capture_output=True)
    assert json.loads((tmp_path / "report" / "drift_report.json").read_text())["windows"]
    (modules,) = imported_modules(logs).values()
    assert "imagenette_drift.commands.drift" in modules and "timm" in modules
    assert training_stack(modules) == []


@pytest.mark.slow
def test_the_apps_in_process_mode_loads_no_training_stack(trained_checkpoint: Path, tmp_path: Path) -> None:
    logs = tmp_path / "imports"
    code = (
        "import sys; sys.path.insert(0, 'app'); from local_model import LocalModel; "
        f"model = LocalModel({str(trained_checkpoint)!r}, threads=1); "
        "print(model.predict('app/examples/church.jpg').label, model.drift().images_seen)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=probe_env(logs),
        check=True,
        timeout=300,
        capture_output=True,
    )
    assert out.stdout.decode().split()[-1] == "1"
    (modules,) = imported_modules(logs).values()
    assert "local_model" in modules and "imagenette_drift.checkpoint" in modules
    assert training_stack(modules) == []
