"""Every file name the workflow writes or fetches: the one owner of the layout (docs/querying.md).

The rules build their inputs and outputs from these functions (called with wildcard patterns such
as ``"{model}"`` they give Snakemake patterns), and the library reads and writes the paths the
rules hand it; nothing else builds a name under ``results/`` or ``resources/``.

The tables of the analyses are Hive partitions: a folder level ``key=value`` per model (and per
layer kind and block, or per perturbation), so that DuckDB, Polars and pyarrow read the model,
layer kind and block as columns across all models in one query::

    results/extract/model=<m>/layer=<kind>/block=<n>/tokens.parquet
    results/extract/model=<m>/predictions.parquet
    results/memories/model=<m>/{class_memories,memory_classes}.parquet
    results/perturbation/model=<m>/perturbation=<name>/{ranks,predictions}.parquet
    results/probes/model=<m>/{ranks,accuracy}.parquet
    results/explain/model=<m>/{maps,perturbation_curves,perturbation_correct}.parquet

Torch-free and free of the rest of the package, so that the rules import it when they are parsed.
"""

from __future__ import annotations

RESULTS = "results"
#: Each job's log and status record (results/logs/<rule>/…), written by the rules' log: directives.
LOGS = f"{RESULTS}/logs"
#: Inputs fetched from elsewhere (dataset downloads, sample images): deleting results/ keeps them.
RESOURCES = "resources"

#: The layer kinds of the extraction: the residual stream after each block, and the attention
#: and MLP updates of the block.
LAYER_KINDS = ("hs", "attn", "mlp")

#: The tables of each perturbed run (one ``perturbation=`` partition).
PERTURBATION_TABLES = ("ranks", "predictions")

#: Perturbation rule → the ``perturbation=`` value of its runs, a pattern of the wildcard that
#: names the variant (``attn_self_only``, ``tokens_no_context``).
PERTURBATION_NAMES = {"attn_perturbation": "attn_{type}", "token_perturbation": "tokens_no_{mask}"}


def layer_name(kind: str, block: int | str) -> str:
    """``hs_3``: how a layer is named in configs, table metadata and figures."""
    return f"{kind}_{block}"


# Datasets and what is fetched ----------------------------------------------------------------------


def dataset_dir(dataset: str) -> str:
    """A generated or prepared dataset's ImageNet-S layout and its tables."""
    return f"{RESULTS}/data/{dataset}"


def download_path(dataset: str, item: str) -> str:
    return f"{RESOURCES}/downloads/{dataset}/{item}"


def sample_path(name: str) -> str:
    return f"{RESOURCES}/samples/{name}"


def cifar_pickles(dataset: str) -> str:
    return f"{dataset_dir(dataset)}/cifar-100-python"


def stimuli_table(dataset: str) -> str:
    return f"{dataset_dir(dataset)}/stimuli.parquet"


def probe_stimuli_table(dataset: str) -> str:
    return f"{dataset_dir(dataset)}/probe_stimuli.parquet"


def token_labels_table(dataset: str, grid_name: str) -> str:
    """Per-token class/context labels of one token grid (``7``, ``4x6``)."""
    return f"{dataset_dir(dataset)}/token_labels_g{grid_name}.parquet"


# Weights and checks --------------------------------------------------------------------------------


def checkpoint(model: str) -> str:
    return f"{RESULTS}/checkpoints/{model}.pt"


def training_report(model: str) -> str:
    return f"{RESULTS}/checkpoints/{model}.training.json"


def finetune_init_checkpoint(model: str) -> str:
    """The checkpoint fine-tuning starts from (pretrained backbone, new head)."""
    return f"{RESULTS}/checkpoints/finetune_init/{model}.pt"


def release_checkpoint(weights_cache: str, model: str) -> str:
    """A release checkpoint downloaded by URL, kept in the weight cache."""
    return f"{weights_cache}/release/{model}.pth"


def weight_check(model: str) -> str:
    return f"{RESULTS}/checks/weights_{model}.json"


def user_inputs_check() -> str:
    return f"{RESULTS}/checks/user_inputs.json"


def preflight_check() -> str:
    return f"{RESULTS}/checks/preflight.json"


def preflight_summary() -> str:
    """The table of every check at the end of ``snakemake preflight``."""
    return f"{LOGS}/preflight_summary.txt"


# The analyses' tables (Hive partitions) ------------------------------------------------------------


def model_partition(stage: str, model: str) -> str:
    return f"{RESULTS}/{stage}/model={model}"


def layer_table(model: str, kind: str, block: int | str) -> str:
    """Rank, logit and top-5 of every token's state at one layer (``kind`` at ``block``)."""
    return f"{model_partition('extract', model)}/layer={kind}/block={block}/tokens.parquet"


def layer_tables(model: str, num_blocks: int, kinds: tuple[str, ...] = LAYER_KINDS) -> dict[str, str]:
    """Layer name (``hs_0`` …) → its table, kinds in ``LAYER_KINDS`` order, blocks ascending."""
    return {layer_name(kind, b): layer_table(model, kind, b) for kind in kinds for b in range(num_blocks)}


def predictions_table(model: str) -> str:
    """True class, prediction and its logit of every image, from the unperturbed forward."""
    return f"{model_partition('extract', model)}/predictions.parquet"


def extraction_shard(model: str, shard: int | str) -> str:
    """A folder of one shard's tables before the merge (outside the partitions: temporary)."""
    return f"{RESULTS}/extract_shards/{model}/{shard}"


def shard_table(shard_dir: str, table: str) -> str:
    """One table (a layer name or ``predictions``) inside a shard's folder."""
    return f"{shard_dir}/{table}.parquet"


def memory_tables(model: str) -> dict[str, str]:
    """Value vectors projected onto the classes: per class its memories, per memory its classes."""
    folder = model_partition("memories", model)
    return {"classes": f"{folder}/class_memories.parquet", "memories": f"{folder}/memory_classes.parquet"}


def perturbation_tables(model: str, perturbation: str) -> dict[str, str]:
    """The last block's ranks and the predictions of one perturbed run (``perturbation`` may be a
    pattern of :data:`PERTURBATION_NAMES`)."""
    folder = f"{model_partition('perturbation', model)}/perturbation={perturbation}"
    return {table: f"{folder}/{table}.parquet" for table in PERTURBATION_TABLES}


def probe_tables(model: str) -> dict[str, str]:
    folder = model_partition("probes", model)
    return {"ranks": f"{folder}/ranks.parquet", "accuracy": f"{folder}/accuracy.parquet"}


def explain_tables(model: str) -> dict[str, str]:
    """Relevance maps, and the token-removal curves with the per-image correctness behind them."""
    folder = model_partition("explain", model)
    return {
        "maps": f"{folder}/maps.parquet",
        "curves": f"{folder}/perturbation_curves.parquet",
        "correct": f"{folder}/perturbation_correct.parquet",
    }


# Figures, tables and pages -------------------------------------------------------------------------


def figure_pdf(stem: str) -> str:
    return f"{RESULTS}/figures/{stem}.pdf"


def figure_png(stem: str) -> str:
    return f"{RESULTS}/figures/{stem}.png"


def table_csv(stem: str) -> str:
    """A table target, or the data behind a figure."""
    return f"{RESULTS}/tables/{stem}.csv"


def explorer_page(model: str) -> str:
    return f"{RESULTS}/explorer/{model}.html"


def explorer_index() -> str:
    return f"{RESULTS}/explorer/index.html"
