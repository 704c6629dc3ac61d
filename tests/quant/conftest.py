"""One intra-op thread for the quant tests: their tensors are small, and on a shared 2-core machine a second
OpenMP thread that cannot be scheduled promptly costs milliseconds per operation."""
import pytest
import torch


@pytest.fixture(autouse=True)
def single_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
