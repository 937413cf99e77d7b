"""Layer maps pair the layers the method states."""

import pytest

from fedalign.alignment import layer_pairs


@pytest.mark.parametrize("depth", [2, 3, 4, 6])
def test_alignahead_equal_depths(depth):
    pairs = layer_pairs("alignahead", depth, depth)
    # student layer l+1 <- peer layer l, and student layer 1 <- peer layer L
    assert pairs == [(1, depth)] + [(l + 1, l) for l in range(1, depth)]


def test_alignahead_four_layers_explicit():
    assert layer_pairs("alignahead", 4, 4) == [(1, 4), (2, 1), (3, 2), (4, 3)]


@pytest.mark.parametrize("depth", [2, 4, 5])
def test_one_to_one_equal_depths(depth):
    assert layer_pairs("one-to-one", depth, depth) == [(l, l) for l in range(1, depth + 1)]


def test_none_has_no_pairs():
    assert layer_pairs("none", 4, 4) == []


def test_different_depths_pair_by_relative_depth():
    # shallow student (2) with deep peer (4): layer j <-> peer layer ceil(j*4/2) = 2j
    assert layer_pairs("one-to-one", 2, 4) == [(1, 2), (2, 4)]
    assert layer_pairs("alignahead", 2, 4) == [(1, 1), (2, 3)]
    # deep student (4) with shallow peer (2): q = ceil(j/2) = 1, 1, 2, 2
    assert layer_pairs("one-to-one", 4, 2) == [(1, 1), (2, 1), (3, 2), (4, 2)]
    assert layer_pairs("alignahead", 4, 2) == [(1, 2), (2, 2), (3, 1), (4, 1)]
    # 3 vs 4: q = ceil(4j/3) = 2, 3, 4
    assert layer_pairs("one-to-one", 3, 4) == [(1, 2), (2, 3), (3, 4)]
    assert layer_pairs("alignahead", 3, 4) == [(1, 1), (2, 2), (3, 3)]


@pytest.mark.parametrize("ls,lp", [(2, 4), (4, 2), (3, 5), (5, 3), (2, 2)])
def test_every_student_layer_is_aligned_once_to_a_valid_peer_layer(ls, lp):
    for strategy in ("alignahead", "one-to-one"):
        pairs = layer_pairs(strategy, ls, lp)
        assert [s for s, _ in pairs] == list(range(1, ls + 1))
        assert all(1 <= p <= lp for _, p in pairs)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="unknown alignment strategy 'ahead'"):
        layer_pairs("ahead", 2, 2)
    with pytest.raises(ValueError, match="depths must be >= 1"):
        layer_pairs("alignahead", 0, 2)
