"""Config files with a key given twice are refused (YAML would keep only the last one)."""

import textwrap
from pathlib import Path

import pytest

from class_embedding.config_files import check_no_duplicate_keys, load_strict
from class_embedding.errors import InputError

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path, text: str, name="config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n") if text.startswith("\n") else text)
    return path


def refused(path) -> str:
    with pytest.raises(InputError) as error:
        check_no_duplicate_keys(path)
    message = str(error.value)
    assert str(path) in message
    return message


def test_the_repository_config_files_pass():
    files = [REPO / "config.yaml", REPO / "config" / "paper.yaml"]
    files += sorted((REPO / "config" / "examples").glob("*.yaml")) + sorted((REPO / "tests" / "configs").glob("*.yaml"))
    assert len(files) > 4
    for path in files:
        check_no_duplicate_keys(path)


def test_a_second_top_level_block_is_refused(tmp_path):
    path = write(
        tmp_path,
        """
        extraction:
          shard_size: 500
          batch_size: 64
        seed: 1
        extraction:
          batch_size: 32
        """,
    )
    assert "'extraction' on lines 1 and 5" in refused(path)


def test_a_nested_duplicate_names_its_path_and_both_lines(tmp_path):
    path = write(
        tmp_path,
        """
        models:
          vit:
            kwargs:
              depth: 12
              embed_dim: 768
              depth: 6
          deit:
            kwargs: {depth: 12}
        """,
    )
    message = refused(path)
    assert "'models.vit.kwargs.depth' on lines 4 and 6" in message
    assert "deit" not in message


def test_duplicates_in_flow_mappings_and_sequences(tmp_path):
    path = write(
        tmp_path,
        """
        layers:
          - {name: a, size: 1, name: b}
        models:
          vit: {depth: 1}
          vit: {depth: 2}
        """,
    )
    message = refused(path)
    assert "'layers[0].name' on lines 2 and 2" in message
    assert "'models.vit' on lines 4 and 5" in message


def test_keys_equal_once_loaded_are_duplicates(tmp_path):
    path = write(tmp_path, "a: 1\n'a': 2\n0x10: x\n16: y\n")
    message = refused(path)
    assert "'a' on lines 1 and 2" in message and "'16' on lines 3 and 4" in message
    check_no_duplicate_keys(write(tmp_path, "1: int\n'1': str\n", "distinct.yaml"))


def test_anchors_aliases_and_overridden_merge_keys_are_not_duplicates(tmp_path):
    path = write(
        tmp_path,
        """
        defaults: &defaults
          depth: 12
          preprocessing: &squash {resize: [32, 32]}
        extra: &extra {heads: 4}
        models:
          vit:
            <<: *defaults
            depth: 6
          deit:
            <<: [*defaults, *extra]
            heads: 2
            preprocessing: *squash
          beit:
            <<: *defaults
            <<: *extra
        """,
    )
    check_no_duplicate_keys(path)
    loaded = load_strict(path)
    assert loaded["models"]["vit"] == {"depth": 6, "preprocessing": {"resize": [32, 32]}}
    assert loaded["models"]["deit"]["heads"] == 2 and loaded["models"]["beit"]["heads"] == 4


def test_a_duplicate_inside_an_anchor_is_reported_once_where_it_is_defined(tmp_path):
    path = write(
        tmp_path,
        """
        defaults: &defaults
          depth: 12
          depth: 6
        models:
          vit: {<<: *defaults, heads: 2}
          deit: *defaults
        """,
    )
    message = refused(path)
    assert message.count("depth") == 1 and "'defaults.depth' on lines 2 and 3" in message


def test_empty_files_json_and_invalid_yaml(tmp_path):
    check_no_duplicate_keys(write(tmp_path, "", "empty.yaml"))
    assert load_strict(write(tmp_path, "# nothing\n", "comment.yaml")) is None
    check_no_duplicate_keys(write(tmp_path, '{"a": {"b": 1}, "c": 2}', "config.json"))
    assert "'a.b' on lines 1 and 1" in refused(write(tmp_path, '{"a": {"b": 1, "b": 2}}', "dup.json"))
    # A leading tab is not YAML; Snakemake reads such a file as JSON, and so does the check.
    check_no_duplicate_keys(write(tmp_path, '\t{"a": 1, "b": 2}', "tab.json"))
    assert "'b' (JSON: lines not located)" in refused(write(tmp_path, '\t{"b": 1, "b": 2}', "dup_tab.json"))
    with pytest.raises(InputError, match="is not valid YAML"):
        check_no_duplicate_keys(write(tmp_path, "a: [1\n", "broken.yaml"))
