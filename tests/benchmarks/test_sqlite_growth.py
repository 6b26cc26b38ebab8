"""The SQLite growth benchmark runs, tiny, and prints each of its figures: it cannot rot."""

from __future__ import annotations

import pytest

from benchmarks.sqlite_growth import main


def test_sqlite_growth_prints_rss_step_and_long_run_figures(
        capsys: pytest.CaptureFixture[str]) -> None:
    main(["--workflows", "3", "--value-mb", "0.01", "--steps-small", "5", "--steps-large", "20",
          "--long", "4", "--long-steps", "2"])
    names = {line.split()[0] for line in capsys.readouterr().out.splitlines()
             if not line.startswith("#")}
    assert {"rss.start", "rss.after_3", "steps.at_5", "steps.at_20", "steps.single_5",
            "steps.single_20", "long.first_2", "long.last_2"} <= names
