"""`run.py submit --file [--downmix]`: what the command sends, read by the wav2vec2 kind."""
from __future__ import annotations

import numpy as np
import pytest

from host import cli
from messages.errors import InvalidInput
from messages.task import Task, TaskResult
from services.wav2vec2.requests import RequestRules, parse_request
from tests.unit.wav2vec2_fixtures import audio_file, tone

RULES = RequestRules(max_seconds=30.0, min_seconds=0.025, num_layers=2)


class Recorder:
    """Stands in for a connected ServiceSystem: keeps the routed tasks, answers success."""

    def __init__(self) -> None:
        self.router = self
        self.tasks: list[Task] = []

    def __enter__(self) -> "Recorder":
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def route_task(self, task: Task) -> TaskResult:
        self.tasks.append(task)
        return TaskResult.success(task.id, {"text": ""})


@pytest.fixture
def sent(monkeypatch) -> list[Task]:
    recorder = Recorder()
    monkeypatch.setattr(cli, "connect", lambda args: recorder)
    return recorder.tasks


@pytest.fixture
def stereo_flac(tmp_path):
    path = tmp_path / "clip.flac"
    path.write_bytes(audio_file(np.stack([tone(0.5, rate=44_100)] * 2, axis=1), 44_100, "FLAC"))
    return path


def test_downmix_sends_the_file_in_the_dict_form_and_the_service_reads_it(sent, stereo_flac):
    assert cli.main(["submit", "speech-to-text", "--file", str(stereo_flac), "--downmix"]) == 0
    assert sent[0].data == {"audio": stereo_flac.read_bytes(), "downmix": True}
    request = parse_request(sent[0], RULES)
    assert (request.sample_rate, request.samples.shape) == (44_100, (22_050,))


def test_without_downmix_the_bytes_go_as_they_are_and_stereo_is_refused(sent, stereo_flac):
    assert cli.main(["submit", "speech-to-text", "--file", str(stereo_flac)]) == 0
    assert sent[0].data == stereo_flac.read_bytes()
    with pytest.raises(InvalidInput, match="2 channels .a 2-channel FLAC file.*downmix"):
        parse_request(sent[0], RULES)


def test_downmix_without_a_file_is_a_command_line_error(sent, capsys):
    assert cli.main(["submit", "speech-to-text", "--data", "[0.0]", "--downmix"]) == 2
    assert "--downmix applies to --file" in capsys.readouterr().err
    assert sent == []
