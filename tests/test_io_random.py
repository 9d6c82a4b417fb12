"""`random_inputs` (the feeds `onnxbridge check` and `bench` make up) follows its documented rule:
the first symbolic axis is the batch, other symbolic axes come from ``dims`` or are 16, floats are
standard normal, integers small and non-negative, optional inputs left out. Expected shapes and
ranges are written here from that rule (issue 12: survivors of the mutation run of `io.py`)."""

from __future__ import annotations

import numpy as np
import pytest

from onnxbridge.errors import InputError
from onnxbridge.io import random_inputs
from onnxbridge.signature import TensorSpec

SPECS = [
    TensorSpec("x", np.dtype(np.float32), ("batch", 3), "tensor(float)"),
    TensorSpec("ids", np.dtype(np.int64), ("batch", "seq"), "tensor(int64)"),
    TensorSpec("mask", np.dtype(bool), (None, 4), "tensor(bool)"),
    TensorSpec("u", np.dtype(np.uint8), (2, "other"), "tensor(uint8)"),
    TensorSpec("words", np.dtype(object), ("batch",), "tensor(string)"),
    TensorSpec("maybe", np.dtype(np.float32), ("batch",), "optional(tensor(float))"),
    TensorSpec("scalar", np.dtype(np.float64), (), "tensor(double)"),
    TensorSpec("unknown_rank", np.dtype(np.float16), None, "tensor(float16)"),
    TensorSpec("one", np.dtype(np.float32), ("batch", 1), "tensor(float)"),
]


def test_shapes_dtypes_and_ranges_follow_the_rule() -> None:
    feeds = random_inputs(SPECS, batch=8, dims={"seq": 5})
    assert list(feeds) == ["x", "ids", "mask", "u", "words", "scalar", "unknown_rank", "one"]
    expected = {"x": ((8, 3), np.float32), "ids": ((8, 5), np.int64), "mask": ((8, 4), np.bool_),
                "u": ((2, 16), np.uint8), "words": ((8,), np.object_),
                "scalar": ((), np.float64), "unknown_rank": ((), np.float16),
                "one": ((8, 1), np.float32)}  # a fixed 1 stays 1
    assert {k: (v.shape, v.dtype.type) for k, v in feeds.items()} == expected
    x = feeds["x"]
    assert (x < 0).any() and (x > 0).any() and np.abs(x).max() < 6  # standard normal values
    assert len(np.unique(x)) == x.size
    ids = feeds["ids"]
    assert ids.min() == 0 and ids.max() <= 9 and len(np.unique(ids)) > 3  # valid small ids, 0 too
    assert set(np.unique(feeds["u"]).tolist()) <= set(range(10))
    assert set(np.unique(feeds["mask"]).tolist()) == {False, True}
    assert feeds["words"].tolist() == ["a"] * 8


def test_named_dims_win_and_the_batch_is_the_first_axis_only() -> None:
    specs = [TensorSpec("a", np.dtype(np.float32), ("n", "n", "m"), "tensor(float)")]
    assert random_inputs(specs).keys() == {"a"}
    assert random_inputs(specs)["a"].shape == (1, 16, 16)  # batch 1 by default
    assert random_inputs(specs, batch=3)["a"].shape == (3, 16, 16)
    assert random_inputs(specs, batch=3, dims={"n": 2})["a"].shape == (2, 2, 16)
    assert random_inputs(specs, dims={"m": 7, "n": 1})["a"].shape == (1, 1, 7)


def test_the_seed_makes_the_same_feeds_and_another_seed_others() -> None:
    one, again, other = (random_inputs(SPECS, batch=4, seed=s) for s in (0, 0, 1))
    for name in one:
        np.testing.assert_array_equal(one[name], again[name])
    assert not np.array_equal(one["x"], other["x"])
    assert not np.array_equal(random_inputs(SPECS, batch=4)["x"], other["x"])  # seed 0 by default


def test_non_tensor_inputs_are_refused_with_their_type() -> None:
    seq = TensorSpec("s", None, None, "seq(tensor(float))")
    with pytest.raises(InputError) as caught:
        random_inputs([SPECS[0], seq])
    assert str(caught.value) == ("input 's' is of type seq(tensor(float)); only tensors can be"
                                 " generated")
