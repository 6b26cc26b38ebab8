"""Each benchmark runs once, tiny, in each mode: they cannot rot. No figure is checked."""

from __future__ import annotations

import pytest

from benchmarks._runner import NAMES, main


@pytest.mark.slow  # every benchmark, on real servers for http
@pytest.mark.parametrize("mode", ["memory", "sqlite", "http"])
def test_every_benchmark_runs_and_prints_its_figures(
        mode: str, capsys: pytest.CaptureFixture[str]) -> None:
    main(["--quick", "--no-peers", f"--mode={mode}"])
    lines = capsys.readouterr().out.splitlines()
    figures = {line.split()[0] for line in lines if not line.startswith("#")}
    for name in NAMES:
        assert any(f.startswith(name) and f.endswith(f"@{mode}") for f in figures), (name, lines)


def test_peer_output_is_parsed_into_figures() -> None:
    from benchmarks._runner import _parse

    assert _parse("seq_steps 12.5 steps/s dbos.sqlite\nnoise\n") == [
        ("seq_steps", 12.5, "steps/s", "dbos.sqlite")]
