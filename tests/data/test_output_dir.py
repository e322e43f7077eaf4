"""The creator refuses an output folder it cannot write, naming it, before it reads the
annotations (TensorFlow's PermissionDeniedError would come from the first shard write)."""

import os
import stat
import tempfile

import pytest

from data.creator import create_tfrecords


def writable(folder) -> bool:
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


@pytest.fixture
def read_only(tmp_path):
    """A folder this process cannot write in (root writes through permission bits: then
    /sys/kernel, where nobody can create files)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    if not writable(folder):
        yield str(folder)
    elif os.path.isdir("/sys/kernel") and not writable("/sys/kernel"):
        yield "/sys/kernel"
    else:
        pytest.skip("no folder this process cannot write in")
    folder.chmod(stat.S_IRWXU)


def test_read_only_output_dir_is_refused_first(read_only):
    # the annotation files do not exist: the folder is checked before they are read
    with pytest.raises(PermissionError, match=rf"^output_dir '{read_only}': cannot write in "
                                              rf"'{read_only}' \("):
        create_tfrecords(read_only, val_image_dir="nowhere", val_annotations_file="none.json")


def test_new_folder_below_a_read_only_one_names_the_parent(read_only):
    out = os.path.join(read_only, "tfrecords")
    with pytest.raises(PermissionError, match=rf"output_dir '{out}': cannot write in "
                                              rf"'{read_only}'"):
        create_tfrecords(out, val_image_dir="nowhere", val_annotations_file="none.json")
    assert not os.path.exists(out)


def test_output_dir_below_a_file_is_refused(tmp_path):
    (tmp_path / "a_file").write_text("x")
    out = str(tmp_path / "a_file" / "tfrecords")
    with pytest.raises(NotADirectoryError, match="is a file, not a folder"):
        create_tfrecords(out, val_image_dir="nowhere", val_annotations_file="none.json")
