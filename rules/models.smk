# Checkpoints: the demo's trained models (the paper run downloads its weights here instead) and
# the seeded random-initialisation twins.


rule train_demo_model:
    input:
        unpack(lambda wildcards: dataset_files(model_dataset(wildcards.model))),
    output:
        checkpoint="results/checkpoints/{model}.pt",
        report="results/checkpoints/{model}.training.json",
    wildcard_constraints:
        model=alternatives(models_with_source("demo_training")),
    params:
        spec=lambda wildcards: MODELS[wildcards.model],
        training=lambda wildcards: {
            **config["demo_training"],
            **{k: v for k, v in MODELS[wildcards.model]["weights"].items() if k != "source"},
        },
        seed=config["seed"],
    threads: 8  # scaled down to --cores by Snakemake
    resources:
        mem_mb=lambda wildcards, attempt: 4000 * attempt,
        runtime=lambda wildcards, attempt: 30 * attempt,
    conda:
        "../envs/extraction.yaml"
    log:
        "results/logs/train_demo_model/{model}.log",
    benchmark:
        "results/benchmarks/train_demo_model/{model}.tsv"
    script:
        "../workflow_scripts/train_demo_model.py"


rule random_twin_checkpoint:
    output:
        "results/checkpoints/{model}.pt",
    wildcard_constraints:
        model=alternatives(models_with_source("random_init")),
    params:
        spec=lambda wildcards: MODELS[wildcards.model],
    conda:
        "../envs/extraction.yaml"
    log:
        "results/logs/random_twin_checkpoint/{model}.log",
    script:
        "../workflow_scripts/random_twin_checkpoint.py"
