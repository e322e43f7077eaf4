"""data/label_map.py: one reader for the creator's label map and a COCO json's categories."""

import json

import pytest

from data.label_map import label_map_entries, load_class_names, read_label_map


def test_label_map_and_coco_categories(tmp_path):
    label_map = tmp_path / "label_map.json"
    label_map.write_text(json.dumps({"classes": [
        {"id": 2, "name": "dog", "source_id": 18}, {"id": 1, "name": "cat", "source_id": 17}]}))
    assert label_map_entries(str(label_map)) == [
        {"id": 1, "name": "cat", "source_id": 17}, {"id": 2, "name": "dog", "source_id": 18}]
    coco = tmp_path / "instances.json"
    coco.write_text(json.dumps({"images": [], "categories": [{"id": 5, "name": "b"},
                                                             {"id": 3, "name": "a"}]}))
    assert load_class_names(str(coco)) == ("a", "b")
    assert read_label_map(str(coco))[0] == {"id": 3, "name": "a", "source_id": 3}
    assert read_label_map(None) is None and read_label_map(str(tmp_path / "none")) is None


@pytest.mark.parametrize("content, message", [
    ({"images": []}, "neither a label map"),
    ([1, 2], "neither a label map"),
    ({"classes": [{"id": 1}]}, "classes without a 'name'"),
    ({"classes": []}, "defines no classes"),
])
def test_bad_label_maps_name_the_file(tmp_path, content, message):
    path = tmp_path / "label_map.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ValueError, match=message):
        load_class_names(str(path))
    with pytest.raises(FileNotFoundError, match="not found"):
        load_class_names(str(tmp_path / "missing.json"))
