"""The lens's top-5 and rank kernels against a stable descending sort, done by brute force."""

import pytest
import torch

from class_embedding.extraction import selection


def stable_order(values: torch.Tensor) -> torch.Tensor:
    """Class order of a stable descending sort: larger first, equal values by smaller index."""
    return torch.sort(values, dim=-1, descending=True, stable=True).indices


def brute_force(values: torch.Tensor, targets: torch.Tensor):
    order = stable_order(values)
    rank = (order == targets.unsqueeze(-1)).float().argmax(-1)
    return rank, values.gather(-1, targets.unsqueeze(-1)).squeeze(-1), order[..., : selection.TOP_K]


# Widths below the grouped path (scanned whole), at its edge, not divisible by the 8 groups, and
# those of the lens (classes, attention and MLP coefficients).
WIDTHS = [5, 7, 40, 63, 64, 65, 100, 768, 1000, 3001, 3072]


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("decimals", [None, 0], ids=["distinct", "many-ties"])
def test_kernels_equal_a_stable_sort(width, decimals, rng):
    values = torch.randn(400, width, generator=rng) * 3
    if decimals is not None:
        values = values.round(decimals=decimals)  # rounding forces ties, also at the fifth place
    targets = torch.randint(0, width, (400,), generator=rng)
    rank, logit, top5 = selection.rank_logit_top5(values, targets)
    expected_rank, expected_logit, expected_top5 = brute_force(values, targets)
    assert rank.dtype == top5.dtype == torch.int16
    assert torch.equal(rank.long(), expected_rank)
    assert torch.equal(logit, expected_logit)
    assert torch.equal(top5.long(), expected_top5)
    assert torch.equal(selection.top5(values).long(), expected_top5)


def test_tie_at_the_fifth_group_maximum_scans_the_row():
    # 64 values, 8 strided groups {w, w + 8, …}. Groups 1–4 hold 4, 3, 2, 1.5; index 7 (group 7)
    # and index 8 (group 0) both hold 1: two groups tie for the fifth maximum. The stable order
    # takes index 7, which the group with the smaller id (group 0) does not hold.
    values = torch.zeros(1, 64)
    values[0, [1, 2, 3, 4, 7, 8]] = torch.tensor([4.0, 3.0, 2.0, 1.5, 1.0, 1.0])
    assert selection.top5(values).tolist() == [[1, 2, 3, 4, 7]]
    assert stable_order(values)[0, :5].tolist() == [1, 2, 3, 4, 7]


def test_shapes_follow_the_input(rng):
    logits = torch.randn(2, 3, 50, generator=rng)
    targets = torch.randint(0, 50, (2, 3), generator=rng)
    rank, logit, top5 = selection.rank_logit_top5(logits, targets)
    assert rank.shape == logit.shape == (2, 3) and top5.shape == (2, 3, 5)
    expected = brute_force(logits.view(6, 50), targets.view(6))
    assert torch.equal(rank.view(6).long(), expected[0]) and torch.equal(top5.view(6, 5).long(), expected[2])
    # A non-contiguous view (as a transposed tensor would be) gives the same.
    transposed = logits.transpose(0, 1).contiguous().transpose(0, 1)
    assert not transposed.is_contiguous()
    assert torch.equal(selection.top5(transposed), top5)


def test_torch_path_agrees_on_distinct_values(rng):
    logits = torch.randn(300, 1000, generator=rng)
    targets = torch.randint(0, 1000, (300,), generator=rng)
    for kernel, reference in zip(
        selection.rank_logit_top5(logits, targets), selection.rank_logit_top5_torch(logits, targets)
    ):
        assert torch.equal(kernel, reference)
    # Half precision on the CPU takes the torch path.
    half = logits.half()
    assert torch.equal(selection.top5(half), half.topk(5, dim=-1).indices.to(torch.int16))


def test_nan_is_never_above_the_target_nor_selected():
    values = torch.arange(100, dtype=torch.float32).flip(0).repeat(3, 1)  # 99, 98, …, 0
    values[:, 2] = float("nan")
    values[1, 50:] = float("-inf")
    targets = torch.tensor([10, 10, 2])
    rank, _, top5 = selection.rank_logit_top5(values, targets)
    assert top5[0].tolist() == [0, 1, 3, 4, 5] and top5[1].tolist() == [0, 1, 3, 4, 5]
    # Rank counts the larger finite logits only; a NaN target has none above it.
    assert rank.tolist() == [9, 9, 0]
    assert torch.equal(rank.long(), selection.rank_of(values, targets))
    assert selection.top5(torch.full((1, 70), float("nan"))).tolist() == [[-1] * 5]


def test_rows_of_minus_infinity_keep_index_order():
    values = torch.full((1, 80), float("-inf"))
    values[0, 30] = 0.0
    assert selection.top5(values).tolist() == [[30, 0, 1, 2, 3]]


def test_fewer_than_five_values_is_refused():
    with pytest.raises(ValueError, match="at least 5 values"):
        selection.top5(torch.randn(3, 4))
