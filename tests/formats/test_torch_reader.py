"""TorchReader: weights-only loading, canonical bytes, file offsets, and refusing code."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from monitor.errors import WeightFormatError
from monitor.formats.torch_bin import TorchReader

from .conftest import raw_bytes

DTYPE_NAMES = {
    "f64": "F64", "f32": "F32", "f16": "F16", "bf16": "BF16", "i64": "I64", "i32": "I32",
    "i16": "I16", "i8": "I8", "u8": "U8", "bool": "BOOL", "f8_e4m3": "F8_E4M3",
    "f8_e5m2": "F8_E5M2", "scalar": "F32", "empty": "F32",
}


class RunsCode:
    """Pickles to a call of os.system; loading it must never run the command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def check_round_trip(reader: TorchReader, originals: dict[str, torch.Tensor], chunk_bytes: int) -> None:
    for info in reader.tensors():
        original = originals[info.name]
        assert info.shape == tuple(original.shape)
        assert info.nbytes == original.numel() * original.element_size()
        assert b"".join(reader.chunks(info, chunk_bytes)) == raw_bytes(original), info.name
        expected = original.detach().reshape(-1).to(torch.float32).numpy()
        np.testing.assert_array_equal(reader.values(info, 0, info.numel), expected)
        if info.numel > 10:
            np.testing.assert_array_equal(reader.values(info, 4, 6), expected[4:10])


@pytest.mark.parametrize("chunk_bytes", [3, 64, 1 << 20])
def test_zip_checkpoint_round_trips_every_dtype(tmp_path: Path, dtype_tensors: dict[str, torch.Tensor],
                                                chunk_bytes: int) -> None:
    path = tmp_path / "pytorch_model.bin"
    torch.save(dtype_tensors, path)
    with TorchReader(path) as reader:
        assert [t.name for t in reader.tensors()] == list(dtype_tensors)
        assert {t.name: t.dtype for t in reader.tensors()} == DTYPE_NAMES
        check_round_trip(reader, dtype_tensors, chunk_bytes)


def test_zip_offsets_point_at_the_values_in_the_file(tmp_path: Path,
                                                     dtype_tensors: dict[str, torch.Tensor]) -> None:
    path = tmp_path / "model.pt"
    torch.save(dtype_tensors, path)
    data = path.read_bytes()
    with TorchReader(path) as reader:
        for info in reader.tensors():
            if info.nbytes:
                assert info.begin > 0, info.name
                assert data[info.begin:info.end] == raw_bytes(dtype_tensors[info.name]), info.name


def test_tied_weights_and_views_both_appear(tmp_path: Path) -> None:
    embed = torch.arange(24, dtype=torch.float32).reshape(6, 4)
    state = {"embed.weight": embed, "lm_head.weight": embed, "part": embed[2:4],
             "transposed": embed.t()}
    path = tmp_path / "tied.pt"
    torch.save(state, path)
    data = path.read_bytes()
    with TorchReader(path) as reader:
        infos = {t.name: t for t in reader.tensors()}
        assert list(infos) == list(state)
        assert (infos["embed.weight"].begin, infos["embed.weight"].end) == \
            (infos["lm_head.weight"].begin, infos["lm_head.weight"].end)
        assert data[infos["part"].begin:infos["part"].end] == raw_bytes(embed[2:4])
        assert (infos["transposed"].begin, infos["transposed"].end) == (0, 96)  # not contiguous
        check_round_trip(reader, state, chunk_bytes=20)


def test_nested_state_dict_and_non_tensors_are_skipped(tmp_path: Path) -> None:
    weights = {"layer.weight": torch.nn.Parameter(torch.ones(2, 3)), "layer.bias": torch.zeros(2), "step": 7,
               "complex": torch.ones(2, dtype=torch.complex64)}
    path = tmp_path / "ckpt.pth"
    torch.save({"epoch": 3, "model": {"state_dict": weights}, "lr": 0.1}, path)
    with TorchReader(path) as reader:
        assert [t.name for t in reader.tensors()] == ["layer.weight", "layer.bias"]
        assert reader.skipped == ["complex"]
        check_round_trip(reader, weights, chunk_bytes=8)  # type: ignore[arg-type]


def test_legacy_checkpoint_loads_without_offsets(tmp_path: Path,
                                                 dtype_tensors: dict[str, torch.Tensor]) -> None:
    # The pre-zip format predates fp8 storages; torch cannot load those from it either.
    dtype_tensors = {k: v for k, v in dtype_tensors.items() if not k.startswith("f8")}
    path = tmp_path / "legacy.bin"
    torch.save(dtype_tensors, path, _use_new_zipfile_serialization=False)
    with TorchReader(path) as reader:
        assert all(t.begin == 0 and t.end == t.nbytes for t in reader.tensors())
        check_round_trip(reader, dtype_tensors, chunk_bytes=64)


def test_pickle_that_runs_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.bin"
    path.write_bytes(pickle.dumps(RunsCode(marker)))
    with pytest.raises(WeightFormatError) as caught:
        TorchReader(path)
    assert str(caught.value) == (f"{path}: refused: the pickle wants to run code "
                                 "(it imports posix.system)")
    assert not marker.exists()


def test_refusal_names_every_import_even_memoized_ones(tmp_path: Path) -> None:
    path = tmp_path / "functions.bin"
    path.write_bytes(pickle.dumps({"a": os.system, "b": os.getcwd, "c": eval}, protocol=4))
    expected = (r"functions\.bin: refused: the pickle wants to run code "
                r"\(it imports posix\.system, posix\.getcwd, builtins\.eval\)$")
    with pytest.raises(WeightFormatError, match=expected):
        TorchReader(path)


@pytest.mark.parametrize("legacy", [False, True])
def test_checkpoint_hiding_code_is_refused(tmp_path: Path, legacy: bool) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"w": torch.ones(2), "payload": RunsCode(marker)}, path,
               _use_new_zipfile_serialization=not legacy)
    with pytest.raises(WeightFormatError, match=r"evil\.pt: refused: the pickle wants to run code "
                                                r"\(it imports posix\.system\)"):
        TorchReader(path)
    assert not marker.exists()


def test_refused_for_an_unsupported_opcode_quotes_torch(tmp_path: Path) -> None:
    path = tmp_path / "proto4.pt"
    torch.save({"w": torch.ones(2)}, path, pickle_protocol=4)  # torch's safe loader lacks FRAME
    with pytest.raises(WeightFormatError) as caught:
        TorchReader(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: refused by torch's weights-only loader (")
    assert "\n" not in message


@pytest.mark.parametrize("content,problem", [
    (b"hello, this is not a checkpoint", "not a readable torch checkpoint"),
    (b"", "not a readable torch checkpoint"),
    (pickle.dumps({"w": 1}, protocol=2), "not a readable torch checkpoint"),  # no legacy magic
])
def test_garbage_names_the_file(tmp_path: Path, content: bytes, problem: str) -> None:
    path = tmp_path / "weird.bin"
    path.write_bytes(content)
    with pytest.raises(WeightFormatError) as caught:
        TorchReader(path)
    assert str(caught.value).startswith(f"{path}: {problem}")
    assert "\n" not in str(caught.value)


def test_not_a_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "list.pt"
    torch.save([torch.ones(2)], path)
    with pytest.raises(WeightFormatError, match=r"list\.pt: holds a list, not a state dict$"):
        TorchReader(path)


def test_truncated_checkpoint(tmp_path: Path, dtype_tensors: dict[str, torch.Tensor]) -> None:
    path = tmp_path / "cut.pt"
    torch.save(dtype_tensors, path)
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(WeightFormatError, match=r"cut\.pt: not a readable torch checkpoint"):
        TorchReader(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(WeightFormatError, match="cannot open"):
        TorchReader(tmp_path / "absent.bin")
