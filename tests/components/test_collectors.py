"""Metric collectors: stdout/file lines, JSON records, and TensorBoard event files read back."""

from __future__ import annotations

import io
import math
import struct
from pathlib import Path
from typing import Any

import pytest
from tensorboard.compat.proto.event_pb2 import Event
from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
from tensorboard.compat.proto.tensor_pb2 import TensorProto
from tensorboard.compat.proto.tensor_shape_pb2 import TensorShapeProto
from tensorboard.summary.writer.event_file_writer import EventFileWriter
from tensorboard.summary.writer.record_writer import RecordWriter

from components.collect import (
    KATIB_DEFAULT,
    NAME_VALUE_RE,
    LineParser,
    Reading,
    collect_problems,
    parse_json_record,
)
from components.runtime.collectors import TensorBoardTail, TextTail

R = Reading


# --- LineParser -----------------------------------------------------------------------------


def test_name_value_reads_every_pair_and_step_sets_the_step() -> None:
    p = LineParser.from_spec("name=value")
    assert p.parse("epoch=2 step=40 loss=0.25 acc = 0.75 lr=1e-3 val-loss|x=-.5") == [
        R("epoch", 2.0, 40),
        R("loss", 0.25, 40),
        R("acc", 0.75, 40),
        R("lr", 0.001, 40),
        R("val-loss|x", -0.5, 40),
    ]
    assert p.parse("loss=0.5") == [R("loss", 0.5, None)]
    assert p.parse("step=3.5 loss=1") == [R("loss", 1.0, None)]  # a non-int step: ignored
    assert p.parse("x=- y= loss=abc nothing here") == []  # captured values that are not numbers
    assert p.pattern_for("anything") == NAME_VALUE_RE
    assert p.parse("loss=nan val=-inf")[0].name == "loss"  # a diverged value still counts


def test_mapping_searches_each_metric_with_value_and_step_groups() -> None:
    p = LineParser.from_spec(
        {
            "val_loss": r"val loss: (?P<value>\S+) at step (?P<step>\d+)",
            "acc": r"acc (\d+\.\d+)",
            "lr": r"lr=(\S*)",
        }
    )
    line = "epoch 3: val loss: 0.125 at step 300, acc 0.5 lr="
    assert p.parse(line) == [R("val_loss", 0.125, 300), R("acc", 0.5, None)]
    [nan] = p.parse("val loss: nan at step 7")  # captured by the regex: accepted
    assert (nan.name, nan.step, math.isnan(nan.value)) == ("val_loss", 7, True)
    assert p.parse("val loss: - at step 7") == []
    assert p.pattern_for("acc") == r"acc (\d+\.\d+)"
    assert p.pattern_for("missing") is None


def test_list_is_katib_metrics_format_every_match_counts() -> None:
    p = LineParser.from_spec([r"(\w+):\s*(\d+\.\d+)", r"\[(\w+)\]\s+(\S+)"])
    assert p.parse("loss: 0.5 acc: 0.75 [f1] 0.25") == [
        R("loss", 0.5, None),
        R("acc", 0.75, None),
        R("f1", 0.25, None),
    ]
    assert p.parse("step: 12 (an int is not matched)") == []
    assert p.pattern_for("loss") == r"(\w+):\s*(\d+\.\d+) | \[(\w+)\]\s+(\S+)"


def test_a_regex_that_never_matches_yields_nothing_and_is_named() -> None:
    p = LineParser.from_spec({"val_acc": r"validation accuracy=(\d+)"})
    assert [p.parse(line) for line in ("val_acc=0.5", "accuracy 3", "")] == [[], [], []]
    assert p.pattern_for("val_acc") == r"validation accuracy=(\d+)"


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ({"val_loss": r"loss=(\d+"}, ["'val_loss'", "does not compile"]),
        ({"val_loss": r"loss=\d+"}, ["'val_loss'", "0 group"]),
        ({"val_loss": r"(?P<step>\d+) loss"}, ["'val_loss'", "no value group"]),
        ({"val loss": r"loss=(\S+)"}, ["'val loss'", "^[A-Za-z0-9_./-]+$"]),
        ({"loss": 3}, ["'loss'", "must be a string"]),
        ([r"(\w+)=(\S+)", r"(\w+)"], ["[1]", "1 group"]),
        ([r"(\w+)=(\S+)", r"(\w+)=(\S+"], ["[1]", "does not compile"]),
        ({}, ["empty"]),
        ([], ["empty"]),
        ("", ["'' is not a spec"]),
        ("key=value", ["'key=value' is not a spec"]),
        (7, ["of type int"]),
    ],
)
def test_bad_specs_raise_naming_the_entry(spec: Any, words: list[str]) -> None:
    with pytest.raises(ValueError) as err:
        LineParser.from_spec(spec)
    assert all(w in str(err.value) for w in words), str(err.value)


# --- JSON records -----------------------------------------------------------------------------


def test_json_record_numbers_and_numeric_strings() -> None:
    line = (
        '{"step": 3, "loss": 0.5, "lr": "1e-3", "acc": "0.25", "n": 7, "ok": true, "x": null,'
        ' "v": [1], "o": {"a": 1}, "s": "abc", "timestamp": 1700000000.5, "time": 1, "epoch_time": 2}'
    )
    assert parse_json_record(line) == [
        R("loss", 0.5, 3),
        R("lr", 0.001, 3),
        R("acc", 0.25, 3),
        R("n", 7.0, 3),
    ]
    assert parse_json_record(b'{"loss": 1}') == [R("loss", 1.0, None)]


@pytest.mark.parametrize(
    ("step", "expected"), [("3.0", 3), ("4", 4), (5.0, 5), (3.5, None), ("x", None), (True, None)]
)
def test_json_step_forms(step: Any, expected: int | None) -> None:
    import json

    assert parse_json_record(json.dumps({"step": step, "loss": 2})) == [R("loss", 2.0, expected)]


@pytest.mark.parametrize("line", ["[1, 2]", "3", '"loss"', "not json", "{", b"\xff\xfe", ""])
def test_json_lines_that_are_not_objects(line: str | bytes) -> None:
    assert parse_json_record(line) == []


# --- TextTail ---------------------------------------------------------------------------------


def test_text_tail_returns_complete_lines_once(tmp_path: Path) -> None:
    path = tmp_path / "out.log"
    tail = TextTail(path)
    assert tail.poll() == []  # not there yet
    path.write_bytes(b"loss=1\nloss=2\nlos")
    assert tail.poll() == ["loss=1", "loss=2"]
    assert tail.poll() == []
    with path.open("ab") as f:
        f.write(b"s=3\r\nacc=\xff\n\xc3")  # a CRLF line, a bad byte, half of a UTF-8 character
    assert tail.poll() == ["loss=3", "acc=\ufffd"]
    with path.open("ab") as f:
        f.write(b"\xa9 done\n")
    assert tail.poll() == ["\u00e9 done"]
    assert tail.offset == path.stat().st_size
    assert TextTail(path, offset=7).poll() == ["loss=2", "loss=3", "acc=\ufffd", "\u00e9 done"]


def test_text_tail_starts_again_when_the_file_is_truncated_or_recreated(tmp_path: Path) -> None:
    path = tmp_path / "metrics.txt"
    path.write_text("loss=1\nloss=2\n")
    tail = TextTail(path)
    assert tail.poll() == ["loss=1", "loss=2"]
    path.write_text("loss=9\n")  # the next attempt truncates it
    assert tail.poll() == ["loss=9"]
    path.unlink()
    assert tail.poll() == []
    path.write_text("a=1\n")  # recreated
    assert tail.poll() == ["a=1"]


def test_text_tail_final_poll_returns_the_partial_last_line(tmp_path: Path) -> None:
    path = tmp_path / "out.log"
    path.write_text("loss=1\nloss=2")
    tail = TextTail(path)
    assert tail.poll() == ["loss=1"]
    assert tail.poll(final=True) == ["loss=2"]
    assert tail.poll(final=True) == []


# --- TensorBoard ------------------------------------------------------------------------------


def test_torch_summary_writer_scalars_and_nothing_else(tmp_path: Path) -> None:
    import numpy as np
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import hparams

    tail = TensorBoardTail(tmp_path / "tb")
    assert tail.poll() == []  # no folder yet
    w = SummaryWriter(str(tmp_path / "tb"))
    for step in range(3):
        w.add_scalar("train/loss", 1.0 / (step + 1), step)
        w.add_scalar("lr", 0.5, step, new_style=True)  # a tensor with the scalars plugin
        w.add_histogram("weights", np.arange(10.0), step)
        w.add_image("img", np.zeros((3, 4, 4)), step)
        w.add_text("note", "hello", step)
    for summary in hparams({"lr": 0.5}, {"hp/acc": 0.9}):
        w._get_file_writer().add_summary(summary)
    w.flush()
    assert tail.poll() == [
        R("train/loss", 1.0, 0),
        R("lr", 0.5, 0),
        R("train/loss", 0.5, 1),
        R("lr", 0.5, 1),
        R("train/loss", pytest.approx(1 / 3), 2),  # type: ignore[arg-type]
        R("lr", 0.5, 2),
    ]
    w.add_scalar("train/loss", 0.25, 3)
    w.close()
    assert tail.poll() == [R("train/loss", 0.25, 3)]
    assert tail.poll() == []


def scalar_tensor(
    tag: str, tensor: TensorProto, *, plugin: str | None = "scalars", step: int = 0
) -> Event:
    metadata = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name=plugin or ""))
    value = Summary.Value(tag=tag, tensor=tensor, metadata=metadata if plugin else None)
    return Event(wall_time=1.0, step=step, summary=Summary(value=[value]))


def test_tf2_tensor_scalars_float_double_and_tensor_content(tmp_path: Path) -> None:
    w = EventFileWriter(str(tmp_path))
    events = [
        scalar_tensor("loss", TensorProto(dtype="DT_FLOAT", float_val=[0.5]), step=1),
        scalar_tensor("loss", TensorProto(dtype="DT_FLOAT", float_val=[0.25]), plugin=None, step=2),
        scalar_tensor("acc", TensorProto(dtype="DT_DOUBLE", double_val=[0.1]), step=2),
        scalar_tensor(
            "f32", TensorProto(dtype="DT_FLOAT", tensor_content=struct.pack("<f", 1.5)), step=3
        ),
        scalar_tensor(
            "f64", TensorProto(dtype="DT_DOUBLE", tensor_content=struct.pack("<d", 0.3)), step=3
        ),
        scalar_tensor("txt", TensorProto(dtype="DT_STRING", string_val=[b"hi"]), plugin="text"),
        scalar_tensor("int", TensorProto(dtype="DT_INT32", int_val=[3])),
        scalar_tensor("unnamed", TensorProto(dtype="DT_FLOAT", float_val=[1.0]), plugin=None),
        scalar_tensor(
            "vec",
            TensorProto(
                dtype="DT_FLOAT",
                float_val=[1.0, 2.0],
                tensor_shape=TensorShapeProto(dim=[TensorShapeProto.Dim(size=2)]),
            ),
        ),
    ]
    for e in events:
        w.add_event(e)
    w.close()
    assert TensorBoardTail(tmp_path).poll() == [
        R("loss", 0.5, 1),
        R("loss", 0.25, 2),  # metadata only on the tag's first value, as TF2 writes it
        R("acc", 0.1, 2),
        R("f32", 1.5, 3),
        R("f64", 0.3, 3),
    ]


def records(*events: Event) -> bytes:
    buf = io.BytesIO()
    writer = RecordWriter(buf)
    for e in events:
        writer.write(e.SerializeToString())
    return buf.getvalue()


def scalar_event(step: int, **values: float) -> Event:
    summary = Summary(value=[Summary.Value(tag=k, simple_value=v) for k, v in values.items()])
    return Event(wall_time=1.0, step=step, summary=summary)


def test_a_torn_record_is_read_whole_on_a_later_poll_at_every_cut(tmp_path: Path) -> None:
    head = records(Event(wall_time=1.0, file_version="brain.Event:2"), scalar_event(1, loss=0.5))
    torn = records(scalar_event(2, loss=0.25, acc=0.75))
    tail_end = records(scalar_event(3, loss=0.125))
    for cut in range(1, len(torn)):  # inside the length, its CRC, the data and the data's CRC
        path = tmp_path / f"c{cut:03d}" / "events.out.tfevents.1.host"
        path.parent.mkdir()
        path.write_bytes(head + torn[:cut])
        tail = TensorBoardTail(path.parent)
        assert tail.poll() == [R("loss", 0.5, 1)], cut
        assert tail.poll() == [], cut
        with path.open("ab") as f:
            f.write(torn[cut:] + tail_end)
        assert tail.poll() == [R("loss", 0.25, 2), R("acc", 0.75, 2), R("loss", 0.125, 3)], cut
        assert tail.poll() == [], cut


def test_new_event_files_in_subfolders_are_picked_up_in_name_order(tmp_path: Path) -> None:
    tail = TensorBoardTail(tmp_path)
    (tmp_path / "events.out.tfevents.0002.host").write_bytes(records(scalar_event(1, loss=1.0)))
    (tmp_path / "notes.txt").write_text("not an event file")
    assert tail.poll() == [R("loss", 1.0, 1)]
    (tmp_path / "eval" / "deeper").mkdir(parents=True)
    (tmp_path / "eval" / "deeper" / "events.out.tfevents.0003.host").write_bytes(
        records(scalar_event(1, val=0.5))
    )
    (tmp_path / "eval" / "events.out.tfevents.0001.host").write_bytes(
        records(scalar_event(1, val=0.25))
    )
    assert tail.poll() == [R("val", 0.25, 1), R("val", 0.5, 1)]
    assert tail.poll() == []


def test_a_recreated_event_file_and_a_corrupt_record(tmp_path: Path) -> None:
    path = tmp_path / "events.out.tfevents.1.host"
    path.write_bytes(records(scalar_event(1, a=1.0), scalar_event(2, a=2.0)))
    tail = TensorBoardTail(tmp_path)
    assert tail.poll() == [R("a", 1.0, 1), R("a", 2.0, 2)]
    path.write_bytes(records(scalar_event(5, b=5.0)))  # smaller: a new file with the same name
    assert tail.poll() == [R("b", 5.0, 5)]
    garbage = io.BytesIO()
    RecordWriter(garbage).write(b"\xff" * 11)  # framed correctly, but not an Event
    with path.open("ab") as f:
        f.write(garbage.getvalue() + records(scalar_event(6, b=6.0)))
    assert tail.poll() == [R("b", 6.0, 6)]


# --- collect_problems -------------------------------------------------------------------------


def test_a_valid_collect_mapping_has_no_problems() -> None:
    assert collect_problems({}) == []
    assert (
        collect_problems(
            {
                "stdout": {"val_loss": r"val_loss=(\S+)"},
                "tensorboard": "runs/tb",
                "file": {"path": "logs/metrics.txt", "format": "text", "regex": "name=value"},
            }
        )
        == []
    )
    assert (
        collect_problems({"stdout": "name=value", "file": {"path": "m.jsonl", "format": "jsonl"}})
        == []
    )
    assert collect_problems({"stdout": [KATIB_DEFAULT], "file": {"path": "out.txt"}}) == []


def test_collect_problems_key_paths() -> None:
    problems = collect_problems(
        {
            "stdout": {"val_loss": r"(", "acc": r"acc=(\S+)"},
            "tensorboard": "/abs/tb",
            "file": {
                "path": "../up.txt",
                "format": "csv",
                "regex": {"loss": "x", "acc": r"a=(\S+)"},
            },
            "stderr": "name=value",
        }
    )
    paths = [p for p, _ in problems]
    assert paths == [
        "trainer.collect.stderr",
        "trainer.collect.stdout.val_loss",
        "trainer.collect.tensorboard",
        "trainer.collect.file.path",
        "trainer.collect.file.format",
        "trainer.collect.file.regex.loss",
        "trainer.collect.file.regex.acc",
    ]
    assert problems[-1][1] == "metric 'acc' is already collected by trainer.collect.stdout"
    assert "unknown key 'stderr'" in problems[0][1]
    assert "does not compile" in problems[1][1]


@pytest.mark.parametrize(
    ("collect", "path", "words"),
    [
        ({"stdout": [KATIB_DEFAULT, r"(\w+)"]}, "trainer.collect.stdout[1]", "1 group"),
        ({"stdout": "katib"}, "trainer.collect.stdout", "is not a spec"),
        ({"stdout": None}, "trainer.collect.stdout", "of type NoneType"),
        ({"tensorboard": ""}, "trainer.collect.tensorboard", "non-empty"),
        ({"tensorboard": 3}, "trainer.collect.tensorboard", "non-empty"),
        ({"tensorboard": "tb/../../x"}, "trainer.collect.tensorboard", "'..'"),
        ({"file": "m.txt"}, "trainer.collect.file", "must be a mapping"),
        ({"file": {"format": "text"}}, "trainer.collect.file.path", "is required"),
        ({"file": {"path": "/m.txt"}}, "trainer.collect.file.path", "absolute"),
        ({"file": {"path": "m", "mode": "a"}}, "trainer.collect.file.mode", "unknown key"),
        (
            {"file": {"path": "m", "format": "jsonl", "regex": {}}},
            "trainer.collect.file.regex",
            "text",
        ),
        ({"file": {"path": "m", "regex": {}}}, "trainer.collect.file.regex", "empty"),
        (
            {"file": {"path": "m", "regex": {"a b": "(x)"}}},
            "trainer.collect.file.regex.a b",
            "name",
        ),
        ({"file": {"path": "m", "regex": ["(x)"]}}, "trainer.collect.file.regex[0]", "1 group"),
        (["stdout"], "trainer.collect", "must be a mapping"),
    ],
)
def test_collect_problem(collect: Any, path: str, words: str) -> None:
    problems = collect_problems(collect)
    assert len(problems) == 1 and problems[0][0] == path and words in problems[0][1], problems
