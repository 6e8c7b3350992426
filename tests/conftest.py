import os

import pytest
import torch

# Deterministic, small CPU work in every test.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def rng():
    return torch.Generator().manual_seed(1234)
