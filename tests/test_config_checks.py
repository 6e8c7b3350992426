"""The config checks and the stage model lists as functions (class_embedding.config.checks,
class_embedding.config.stage_models), on the demo config with the schema's defaults filled in: each
refusal names its key, and the lists are the ones the demo's DAG runs."""

import copy
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from snakemake.utils import validate

from class_embedding import results_layout as layout
from class_embedding.config import checks as config_checks
from class_embedding.config import stage_models
from class_embedding.errors import InputError

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "config" / "schema.yaml"


@pytest.fixture
def demo():
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    validate(config, str(SCHEMA), set_default=True)
    return config


def test_the_demo_passes_and_its_stages_are_the_demos(demo):
    assert config_checks.schema_error(demo, SCHEMA) is None
    assert config_checks.check_datasets(demo) == []
    config_checks.check_weights(demo)
    config_checks.check_free_text(demo)
    stages = stage_models.StageModels.of(demo)
    assert stages.trained == ["demo_vit_g7", "demo_vit_g14", "demo_vit_gap"]  # model_order
    assert sorted(stages.models) == sorted([*stages.trained, *(f"{n}_random" for n in stages.trained)])
    assert stages.segmented == stages.trained and stages.explorer == stages.trained
    # Perturbations, explanations and probes need a [CLS] token; the demo's GAP model has none.
    assert stages.perturbation == stages.explain == stages.probe == ["demo_vit_g7", "demo_vit_g14"]
    assert stages.explain_figure == "demo_vit_g7" and stages.finetuned == stages.user_checkpoints == []
    seed = stages.models["demo_vit_g7_random"]["weights"]["seed"]
    assert seed == stage_models.twin_seed(demo, "demo_vit_g7") != stage_models.twin_seed(demo, "demo_vit_g14")


@pytest.mark.parametrize(
    ("change", "check", "message"),
    [
        (lambda c: c["models"]["demo_vit_g7"].update(dataset="nope"), "datasets", "models.demo_vit_g7.dataset 'nope'"),
        (lambda c: c["datasets"]["demo"].update(root="/x"), "datasets", "datasets.demo needs exactly one of"),
        (
            lambda c: c["models"]["demo_vit_g7"].update(weights={"source": "timm", "tag": "vit_small.augreg"}),
            "weights",
            "models.demo_vit_g7.weights.tag 'vit_small.augreg' is not a tag of arch",
        ),
        (
            lambda c: c["models"]["demo_vit_g7"].update(display_name="a</script>"),
            "text",
            r"models.demo_vit_g7.display_name",
        ),
        (lambda c: c.update(model_order=["demo_vit_g7", "ghost"]), "stages", "model_order: ghost is not a key"),
        (lambda c: c["probing"].update(models=["ghost"]), "stages", "probing.models: 'ghost' is not a key of models"),
        (
            lambda c: c["explainability"].update(models=["demo_vit_gap"]),
            "stages",
            "explainability.models: 'demo_vit_gap' is not a trained model with a class token",
        ),
        (lambda c: c["token_maps"].update(blocks=[0, 40]), "blocks", r"token_maps.blocks: \[40\] are outside"),
        (lambda c: c["tutorial"].update(model="demo_vit_gap"), "tutorial", "tutorial.model: 'demo_vit_gap' is not"),
        (
            lambda c: c["expected_values"].update(ghost={"image": "x"}),
            "expected",
            "expected_values.ghost: 'ghost' is not a model",
        ),
    ],
    ids=["dataset", "two_kinds", "tag", "text", "order", "probes", "explain", "blocks", "tutorial", "expected"],
)
def test_each_refusal_names_its_key(demo, change, check, message):
    config = copy.deepcopy(demo)
    change(config)
    stages = stage_models.StageModels.of(demo)
    run = {
        "datasets": lambda: config_checks.check_datasets(config),
        "weights": lambda: config_checks.check_weights(config),
        "text": lambda: config_checks.check_free_text(config),
        "stages": lambda: stage_models.StageModels.of(config),
        "blocks": lambda: config_checks.check_token_map_blocks(config, stages.models, stages.trained),
        "tutorial": lambda: config_checks.check_tutorial(config, stages.models, stages.trained),
        "expected": lambda: config_checks.check_expected_values(config, stages.models),
    }[check]
    with pytest.raises(InputError, match=message):
        run()


def test_the_schema_names_the_key(demo):
    demo["models"]["demo_vit_g7"]["num_blocks"] = "twelve"
    assert config_checks.schema_error(demo, SCHEMA).startswith("invalid config: models.demo_vit_g7.num_blocks:")


def test_a_table_cut_short_stops_with_the_commands_to_rebuild_it(tmp_path):
    table = tmp_path / layout.layer_table("m", "hs", 0)
    table.parent.mkdir(parents=True)
    pq.write_table(pa.table({"x": list(range(100))}), table)
    config_checks.check_tables_complete(str(tmp_path / "results"))
    table.write_bytes(table.read_bytes()[:-20])
    with pytest.raises(
        InputError, match=r"1 Parquet table\(s\) .* are incomplete .*rm .*layer=hs/block=0/tokens.parquet"
    ):
        config_checks.check_tables_complete(str(tmp_path / "results"))


def test_a_key_given_twice_is_refused(tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text("seed: 1\nseed: 2\n")
    with pytest.raises(InputError, match="invalid config: .*seed"):
        config_checks.check_config_files([path])
