"""Rule-script logging: bad input reaches the console and the log, without a traceback."""

import logging
import sys
from types import SimpleNamespace

import pytest

from class_embedding import logs
from class_embedding.errors import InputError


def test_input_error_is_reported_on_console_and_in_log(tmp_path, capsys):
    smk = SimpleNamespace(rule="stimuli", log=[str(tmp_path / "stimuli.log")], threads=1)
    with pytest.raises(SystemExit) as exit_info:
        with logs.logged(smk):
            logging.getLogger("test").info("selecting stimuli")
            print("progress", file=sys.stderr)
            raise InputError("image folder /data/validation not found: point the dataset root at it.")
    assert exit_info.value.code == 1
    console = capsys.readouterr().err
    assert (
        console.strip()
        == "Error in rule stimuli: image folder /data/validation not found: point the dataset root at it."
    )
    log_text = (tmp_path / "stimuli.log").read_text()
    assert "selecting stimuli" in log_text and "progress" in log_text
    assert "Error in rule stimuli: image folder /data/validation not found" in log_text


def test_other_errors_keep_their_traceback(tmp_path):
    smk = SimpleNamespace(rule="extract_shard", log=[str(tmp_path / "x.log")], threads=1)
    with pytest.raises(ZeroDivisionError):
        with logs.logged(smk):
            _ = 1 / 0
    assert "ZeroDivisionError" in (tmp_path / "x.log").read_text()
    assert not getattr(sys.stderr, "closed", False)


def test_a_torch_job_runs_on_its_rules_threads(tmp_path):
    import torch

    before = torch.get_num_threads()
    try:
        for threads in (1, 3, 0):
            smk = SimpleNamespace(rule="extract_shard", log=[str(tmp_path / "x.log")], threads=threads)
            with logs.logged(smk):
                assert torch.get_num_threads() == max(threads, 1)
    finally:
        torch.set_num_threads(before)
