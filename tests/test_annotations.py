"""Annotation files: the fast AIR-JSON reader agrees with `json` on every input, and ignore planes round-trip."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imseg.annotations import _parse_binary_lists, read_annotation, write_annotation
from imseg.errors import DataError

WHITESPACE = st.text(alphabet=" \t\r\n", max_size=3)


@st.composite
def nested(draw, ndim, ragged=False):
    """(value as nested lists, JSON text with random whitespace between every token)."""
    shape = [draw(st.integers(1, 3))] + [draw(st.integers(2 if ragged else 1, 5)) for _ in range(ndim - 1)]
    array = draw(st.lists(st.integers(0, 1), min_size=int(np.prod(shape)), max_size=int(np.prod(shape))))
    value = np.array(array).reshape(shape).tolist()
    if ragged:  # one row a different length than the others
        row = value[draw(st.integers(0, shape[0] - 1))][draw(st.integers(0, shape[1] - 1))]
        if len(row) > 1 and draw(st.booleans()):
            row.pop()
        else:
            row.append(draw(st.integers(0, 1)))

    def dump(v):
        if isinstance(v, list):
            inner = ("," + draw(WHITESPACE)).join(draw(WHITESPACE) + dump(x) + draw(WHITESPACE) for x in v)
            return "[" + inner + "]"
        return str(v)

    return value, dump(value)


@st.composite
def air_file(draw, ragged=False):
    annotation, text = draw(nested(3, ragged))
    ignore = draw(st.one_of(st.none(), nested(2)))
    parts = [f'"annotation":{draw(WHITESPACE)}{text}', '"img": "0.jpg"']
    if ignore is not None:
        parts.append(f'"ignore":{draw(WHITESPACE)}{ignore[1]}')
    order = draw(st.permutations(range(len(parts))))
    raw = "{" + draw(WHITESPACE) + ("," + draw(WHITESPACE)).join(parts[i] for i in order) + draw(WHITESPACE) + "}"
    return raw.encode(), annotation, None if ignore is None else ignore[0]


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(air_file())
def test_fast_reader_equals_json_on_regular_files(case):
    raw, annotation, ignore = case
    assert json.loads(raw)["annotation"] == annotation  # the generator writes valid JSON
    np.testing.assert_array_equal(_parse_binary_lists(raw, b'"annotation"', 3), np.array(annotation))
    if ignore is not None:
        np.testing.assert_array_equal(_parse_binary_lists(raw, b'"ignore"', 2), np.array(ignore))


@pytest.mark.slow
@settings(max_examples=200, deadline=None)
@given(air_file(ragged=True))
def test_ragged_files_are_left_to_json_and_refused(tmp_path_factory, case):
    raw = case[0]
    assert _parse_binary_lists(raw, b'"annotation"', 3) is None
    path = tmp_path_factory.mktemp("ragged") / "0.json"
    path.write_bytes(raw)
    with pytest.raises(DataError, match="is not a regular|annotation has shape"):
        read_annotation(str(path))


@pytest.mark.parametrize("ext", [".json", ".npz"])
def test_ignore_planes_round_trip_and_are_optional(tmp_path, ext):
    rng = np.random.default_rng(0)
    annotation = (rng.random((3, 5, 7)) < 0.5).astype(np.uint8)
    ignore = (rng.random((5, 7)) < 0.3).astype(np.uint8)
    path = str(tmp_path / f"a{ext}")
    write_annotation(path, annotation, "a.jpg", ignore)
    got, got_ignore = read_annotation(path, with_ignore=True)
    np.testing.assert_array_equal(got, annotation)
    np.testing.assert_array_equal(got_ignore, ignore)
    write_annotation(path, annotation, "a.jpg")  # no ignore plane: every pixel counts
    got, got_ignore = read_annotation(path, with_ignore=True)
    np.testing.assert_array_equal(got, annotation)
    assert got_ignore.shape == (5, 7) and not got_ignore.any()
