import os

import pytest

from dft import storage


def test_local_roundtrip_and_atomic(tmp_path):
    uri = str(tmp_path / "a" / "b.json")
    storage.write_json(uri, {"x": 1})
    assert storage.read_json(uri) == {"x": 1}
    assert storage.read_json("file://" + uri) == {"x": 1}
    assert os.listdir(tmp_path / "a") == ["b.json"]  # no temporary left behind


def test_failed_write_keeps_old_content(tmp_path):
    uri = str(tmp_path / "f.txt")
    storage.write_text(uri, "old")
    with pytest.raises(RuntimeError):
        with storage.atomic_local_path(uri) as tmp:
            with open(tmp, "w") as f:
                f.write("half")
            raise RuntimeError("crash mid-write")
    assert storage.read_text(uri) == "old"
    assert os.listdir(tmp_path) == ["f.txt"]


def test_join_and_normalize():
    assert storage.join("s3://b/p", "x", "y") == "s3://b/p/x/y"
    assert storage.normalize("s3://b/p/") == "s3://b/p"
    assert storage.normalize("file:///tmp/x") == "/tmp/x"
    with pytest.raises(ValueError, match="unsupported URI scheme"):
        storage.normalize("gs://b/x")


@pytest.mark.s3
def test_s3_roundtrip(s3_uri):
    storage.write_json(storage.join(s3_uri, "m.json"), {"ok": True})
    storage.write_bytes(storage.join(s3_uri, "sub", "b.bin"), b"\x00\x01")
    assert storage.read_json(storage.join(s3_uri, "m.json")) == {"ok": True}
    assert storage.read_bytes(storage.join(s3_uri, "sub", "b.bin")) == b"\x00\x01"
    assert storage.listdir(s3_uri) == ["m.json", "sub"]
    assert storage.glob(s3_uri, "**/*.bin") == [storage.join(s3_uri, "sub", "b.bin")]
    with storage.atomic_local_path(storage.join(s3_uri, "big.txt")) as tmp:
        with open(tmp, "w") as f:
            f.write("payload")
    assert storage.read_text(storage.join(s3_uri, "big.txt")) == "payload"


@pytest.mark.s3
def test_s3_pyarrow_parquet_roundtrip(s3_uri):
    import pyarrow as pa
    import pyarrow.parquet as pq

    fs, path = storage.pyarrow_filesystem(storage.join(s3_uri, "t.parquet"))
    pq.write_table(pa.table({"a": [1, 2, 3]}), path, filesystem=fs)
    assert pq.read_table(path, filesystem=fs).column("a").to_pylist() == [1, 2, 3]


@pytest.mark.s3
def test_s3_folder_upload_download(s3_uri, tmp_path):
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "a.txt").write_text("A")
    (src / "d" / "b.txt").write_text("B")
    storage.upload_folder(str(src), s3_uri)
    dst = tmp_path / "dst"
    storage.download_folder(s3_uri, str(dst))
    assert (dst / "a.txt").read_text() == "A" and (dst / "d" / "b.txt").read_text() == "B"
