"""The one device selector (emotalk.utils.device)."""
from __future__ import annotations

import pytest
import torch

from emotalk.errors import InputError
from emotalk.utils.device import select_device


def test_auto_and_cpu():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert select_device().type == expected
    assert select_device("auto").type == expected
    assert select_device(None).type == expected
    assert select_device(" CPU ") == torch.device("cpu")
    assert select_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.parametrize("spec", ["gpu", "cuda:x", "tpu", "meta"])
def test_bad_specs_are_input_errors_that_say_what_to_use(spec):
    with pytest.raises(InputError, match=r"auto, cpu, cuda or cuda:N|not available"):
        select_device(spec)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_cuda_without_cuda_is_an_input_error():
    with pytest.raises(InputError, match="CUDA is not available; use cpu"):
        select_device("cuda:0")
    assert select_device("auto", local_rank=3) == torch.device("cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_index_from_local_rank():
    assert select_device("auto", local_rank=0) == torch.device("cuda", 0)
    assert select_device("cuda", local_rank=0) == torch.device("cuda", 0)
    with pytest.raises(InputError, match="CUDA device"):
        select_device(f"cuda:{torch.cuda.device_count()}")
