"""`skip_or_fail`: a missing tool or data set skips locally and fails under CI=true, so CI cannot pass by skipping."""

from __future__ import annotations

import pytest

from tests.conftest import import_or_fail, skip_or_fail


@pytest.mark.parametrize(("ci", "outcome"), [("", pytest.skip.Exception), ("true", pytest.fail.Exception)])
def test_a_missing_tool_skips_locally_and_fails_under_ci(
    ci: str, outcome: type[BaseException], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match="hadolint not found"):
        skip_or_fail("hadolint not found")
    with pytest.raises(outcome, match="no_such_module_here"):
        import_or_fail("no_such_module_here", "an extra")
    assert import_or_fail("json", "the standard library").dumps([1]) == "[1]"
