"""The Space as it would be pushed: `scripts/stage_space.py`'s folder installs into a fresh venv from its own
requirements (plus the gradio release its README's `sdk_version` names, which Spaces installs) and serves the
demo against a real `imagenette serve`, driven in headless Chromium."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.app.conftest import running
from tests.app.test_browser import BROWSER_ARGS, CHROMIUM, IMAGE, sync_api
from tests.serve._server import free_port

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def sdk_version(space: Path) -> str:
    """The gradio release of the Space's README front matter (`sdk_version: X.Y.Z`)."""
    match = re.search(r"^sdk_version:\s*\"?([\w.]+)\"?\s*$", (space / "README.md").read_text(), re.M)
    assert match, "app/README.md names no sdk_version"
    return match.group(1)


@pytest.fixture(scope="module")
def staged_space(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The staged Space and the python of a fresh venv holding only what the Space installs."""
    root = tmp_path_factory.mktemp("space")
    space = root / "space"
    subprocess.run([sys.executable, str(REPO / "scripts" / "stage_space.py"), str(space)], check=True)
    subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True, timeout=300)
    python = root / "venv" / "bin" / "python"
    install = subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "-q",
            f"gradio=={sdk_version(space)}",
            "-r",
            "requirements.txt",
        ],
        cwd=space,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    return space, python


def test_the_staged_space_serves_the_demo_from_its_own_venv(
    staged_space: tuple[Path, Path], api_url: str, tmp_path: Path
) -> None:
    space, python = staged_space
    imported = subprocess.run(
        [
            str(python),
            "-c",
            "import sys, app; print(sorted(m for m in ('torch', 'imagenette_drift.cli') if m in sys.modules))",
        ],
        cwd=space,
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "GRADIO_ANALYTICS_ENABLED": "False"},
    )
    assert imported.stdout.strip() == "[]"  # no torch, nor the package: only the contract modules beside it

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [str(python), str(space / "app.py")]
    env = {"API_URL": api_url, "PORT": str(port), "API_TIMEOUT": "60", "PYTHONPATH": ""}
    with (
        running(command, f"{url}/", tmp_path / "app.log", timeout=120, **env),
        sync_api.sync_playwright() as p,
    ):
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=BROWSER_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.set_default_timeout(60_000)
            page.goto(url)
            page.locator("#input-image input[type=file]").set_input_files(str(IMAGE))
            sync_api.expect(page.locator("#input-image img")).to_be_visible()
            page.locator("#submit").click()
            shown_label = page.locator("#prediction [data-testid=label-output-value]")
            sync_api.expect(shown_label).not_to_be_empty()
            label = shown_label.inner_text()
        finally:
            browser.close()
    with open(IMAGE, "rb") as f:
        expected = requests.post(
            f"{api_url}/predict", files={"file": (IMAGE.name, f, "image/jpeg")}, timeout=60
        )
    assert label == expected.json()["label"]
