"""fabric.progress: a bar in a terminal, a line per N percent in logs, the plain iterable on other ranks."""

from __future__ import annotations

import io
import sys

import pytest
from fabric_core import Fabric
from fabric_core.utilities.progress import LineProgress, progress_bar


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line]


def test_lines_every_ten_percent_and_items_unchanged() -> None:
    out = io.StringIO()
    items = list(progress_bar(range(50), desc="train", file=out))
    assert items == list(range(50))
    lines = _lines(out.getvalue())
    assert len(lines) == 10
    assert lines[0].startswith("train:  10% 5/50 [")
    assert lines[-1].startswith("train: 100% 50/50 [")
    assert "\r" not in out.getvalue()


def test_lines_every_custom_percent_keeps_len() -> None:
    out = io.StringIO()
    wrapped = progress_bar(list("abcdefgh"), every=25, file=out)
    assert len(wrapped) == 8
    assert list(wrapped) == list("abcdefgh")
    assert [line.split(" [")[0] for line in _lines(out.getvalue())] == [" 25% 2/8", " 50% 4/8", " 75% 6/8", "100% 8/8"]


def test_unknown_total_prints_at_1_2_5_and_closes_at_the_end() -> None:
    out = io.StringIO()
    assert list(progress_bar((i for i in range(23)), desc="gen", file=out)) == list(range(23))
    counts = [int(line.split(" ")[1]) for line in _lines(out.getvalue())]
    assert counts == [1, 2, 5, 10, 20, 23]


def test_a_loop_stopped_early_reports_where_it_stopped() -> None:
    out = io.StringIO()
    wrapped = LineProgress(range(100), desc="d", total=100, every=50, file=out)
    for i in wrapped:
        if i == 29:
            break
    # A generator closed early writes nothing more; the 50% line was never reached.
    assert _lines(out.getvalue()) == []
    out = io.StringIO()
    list(LineProgress(range(30), desc="d", total=100, every=50, file=out))
    assert _lines(out.getvalue())[-1].startswith("d:  30% 30/100")


def test_empty_iterable_prints_one_line() -> None:
    out = io.StringIO()
    assert list(progress_bar([], desc="nothing", file=out)) == []
    assert len(_lines(out.getvalue())) == 1


def test_fabric_progress_prints_lines_to_stderr_when_not_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    fabric = Fabric(accelerator="cpu", devices=1)
    assert sum(fabric.progress(range(20), desc="epoch 0")) == sum(range(20))
    err = capsys.readouterr().err
    assert len(_lines(err)) == 10 and "epoch 0: 100% 20/20" in err


def test_bar_in_a_terminal_uses_tqdm() -> None:
    pytest.importorskip("tqdm")
    out = _Terminal()
    assert list(progress_bar(range(7), desc="bar", file=out)) == list(range(7))
    assert "\r" in out.getvalue() and "7/7" in out.getvalue()


def test_without_tqdm_a_terminal_gets_lines_and_bar_mode_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    out = _Terminal()
    assert list(progress_bar(range(10), desc="fallback", file=out)) == list(range(10))
    assert "\r" not in out.getvalue() and "fallback: 100% 10/10" in out.getvalue()
    with pytest.raises(ModuleNotFoundError, match="pip install tqdm"):
        progress_bar(range(3), mode="bar", file=out)


@pytest.mark.parametrize(("kwargs", "match"), [({"mode": "fancy"}, "auto, bar, lines"), ({"every": 0}, "percentage")])
def test_bad_arguments_are_refused(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        progress_bar(range(3), **kwargs)


@pytest.mark.multiprocess
@pytest.mark.timeout(900)
def test_only_rank_zero_wraps_the_iterable(preloaded_python) -> None:
    from convenience_jobs import job, part

    results = job("ddp", 2, preloaded_python)
    assert part(results, 0, "progress") == {"same_object": False, "items": [1, 2, 3]}
    assert part(results, 1, "progress") == {"same_object": True, "items": [1, 2, 3]}
