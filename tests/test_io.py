"""pipeline.core.io: atomic writes never leave partial files; keyed JSONL reading names file/line/field."""

import json

import pytest

from pipeline.core.io import DataError, atomic_open, index_jsonl_by_id, write_jsonl


def test_atomic_open_keeps_old_file_on_failure(tmp_path):
    path = tmp_path / "out.jsonl"
    write_jsonl(path, [{"a": 1}])
    with pytest.raises(RuntimeError):
        with atomic_open(path) as fh:
            fh.write("half")
            raise RuntimeError("boom")
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


def test_index_jsonl_by_id_rejects_duplicates_across_files(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    write_jsonl(a, [{"sample_id": "x"}, {"sample_id": "y"}])
    b.write_text('{"sample_id": "z"}\n\n{"sample_id": "x"}\n')
    seen = []
    out = index_jsonl_by_id(a, validate=lambda line, row: seen.append(line))
    assert set(out) == {"x", "y"} and seen == [1, 2]
    with pytest.raises(DataError) as err:
        index_jsonl_by_id(b, out)
    assert err.value.line == 3 and err.value.field == "sample_id" and str(b) in str(err.value)
    bad = tmp_path / "c.jsonl"
    bad.write_text('{"id": 1}\n')
    with pytest.raises(DataError, match="line 1, field 'sample_id'"):
        index_jsonl_by_id(bad)
