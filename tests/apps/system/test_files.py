"""apps.system.files: one place that says where artifacts live and writes them whole."""

import hashlib

from apps.system import files


def test_artifact_paths_round_trip_through_what_a_row_stores(settings, tmp_path):
    settings.ARTIFACTS_DIR = str(tmp_path)
    path = files.artifact_path("models", 12, "model.safetensors")
    assert path == tmp_path / "models" / "12" / "model.safetensors"
    assert files.artifact_relative(path) == "models/12/model.safetensors"
    assert files.artifact_path(files.artifact_relative(path)) == path


def test_write_atomic_takes_bytes_or_a_writer_and_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "deep" / "a.bin"
    files.write_atomic(target, b"first")
    files.write_atomic(target, lambda f: (f.write(b"sec"), f.write(b"ond")))
    assert target.read_bytes() == b"second"
    assert [p.name for p in target.parent.iterdir()] == ["a.bin"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "a.json"
    files.write_json(target, {"step": 1})

    def broken(f):
        f.write(b"half")
        raise OSError("disk full")

    try:
        files.write_atomic(target, broken)
    except OSError:
        pass
    assert target.read_text().replace(" ", "").replace("\n", "") == '{"step":1}'
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_sha256_file_matches_hashlib_across_chunks(tmp_path):
    data = bytes(range(256)) * 9000  # over two of its 1 MiB chunks
    (tmp_path / "w").write_bytes(data)
    assert files.sha256_file(tmp_path / "w") == hashlib.sha256(data).hexdigest()
    files.remove(tmp_path / "w")
    assert not (tmp_path / "w").exists()
