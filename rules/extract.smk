# Extraction: one GPU job per (model, image shard), each reducing every block's states in one
# forward pass; then one merge per model into results/extract/<model>/<layer>.parquet.


def stimuli_table(model):
    return f"results/data/{model_dataset(model)}/stimuli.parquet"


def shard_dirs(model):
    """Shard outputs of a model. Without shard_size there is one, so the whole DAG is known up
    front; with it, their number is known once the stimulus table exists (a checkpoint)."""
    shard_size = config["extraction"]["shard_size"]
    n_shards = 1
    if shard_size:
        import pyarrow.parquet

        table = checkpoints.stimuli.get(dataset=model_dataset(model)).output[0]
        n_shards = -(-pyarrow.parquet.read_metadata(table).num_rows // shard_size)
    return [f"{extract_dir(model)}/shards/{shard}" for shard in range(n_shards)]


rule extract_shard:
    input:
        unpack(lambda wildcards: dataset_files(model_dataset(wildcards.model))),
        stimuli=lambda wildcards: stimuli_table(wildcards.model),
        checkpoint=lambda wildcards: checkpoint_path(wildcards.model),
    output:
        temp(directory("results/extract/{model}/shards/{shard}")),
    params:
        spec=lambda wildcards: MODELS[wildcards.model],
        extraction=config["extraction"],
    resources:
        gpu=1,
        mem_mb=lambda wildcards, attempt: 8000 * attempt,
        runtime=lambda wildcards, attempt: 60 * attempt,
    log:
        "results/logs/extract_shard/{model}_{shard}.log",
    benchmark:
        "results/benchmarks/extract_shard/{model}_{shard}.tsv"
    script:
        "../workflow_scripts/extract_shard.py"


for merged_model in MODELS:

    rule:
        name:
            f"merge_extraction_{merged_model}"
        input:
            lambda wildcards, model=merged_model: shard_dirs(model),
        output:
            layers=layer_tables(merged_model),
            predictions=f"{extract_dir(merged_model)}/predictions.parquet",
        params:
            model=merged_model,
            layers=layer_names(merged_model),
        log:
            f"results/logs/merge_extraction/{merged_model}.log",
        script:
            "../workflow_scripts/merge_extraction.py"
