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


# The paper's pretrained weights (config/paper.yaml). Fetching runs on the submitting machine
# (localrule: compute nodes may be offline) and is retried; every converted checkpoint is a plain
# state dict of the configured architecture that passes the lens audit before it is written.
FINETUNED_MODELS = [m for m in models_with_source("file") if MODELS[m]["weights"]["path"] is None]
USER_CHECKPOINT_MODELS = [m for m in models_with_source("file") if m not in FINETUNED_MODELS]


rule fetch_timm_weights:
    output:
        "results/checkpoints/{model}.pt",
    wildcard_constraints:
        model=alternatives(models_with_source("timm")),
    params:
        spec=lambda wildcards: MODELS[wildcards.model],
        cache=config["weights_cache"],
    localrule: True
    retries: 2
    conda:
        "../envs/extraction.yaml"
    log:
        "results/logs/fetch_timm_weights/{model}.log",
    script:
        "../workflow_scripts/fetch_timm_weights.py"


rule download_checkpoint:
    output:
        f"{config['weights_cache']}/release/{{model}}.pth",
    wildcard_constraints:
        model=alternatives(models_with_source("url")),
    params:
        source=lambda wildcards: MODELS[wildcards.model]["weights"],
    localrule: True
    retries: 2
    conda:
        "../envs/analysis.yaml"
    log:
        "results/logs/download_checkpoint/{model}.log",
    script:
        "../workflow_scripts/download_file.py"


rule convert_checkpoint:
    input:
        lambda wildcards: (
            f"{config['weights_cache']}/release/{wildcards.model}.pth"
            if MODELS[wildcards.model]["weights"]["source"] == "url"
            else MODELS[wildcards.model]["weights"]["path"]
        ),
    output:
        "results/checkpoints/{model}.pt",
    wildcard_constraints:
        model=alternatives(models_with_source("url") + USER_CHECKPOINT_MODELS),
    params:
        spec=lambda wildcards: MODELS[wildcards.model],
    resources:
        mem_mb=lambda wildcards, attempt: 8000 * attempt,
    conda:
        "../envs/extraction.yaml"
    log:
        "results/logs/convert_checkpoint/{model}.log",
    script:
        "../workflow_scripts/convert_checkpoint.py"


rule fetch_finetune_init:
    output:
        "results/checkpoints/finetune_init/{model}.pt",
    wildcard_constraints:
        model=alternatives(FINETUNED_MODELS),
    params:
        spec=lambda wildcards: MODELS[wildcards.model],
        cache=config["weights_cache"],
        seed=config["seed"],
    localrule: True
    retries: 2
    conda:
        "../envs/extraction.yaml"
    log:
        "results/logs/fetch_finetune_init/{model}.log",
    script:
        "../workflow_scripts/fetch_timm_weights.py"


# Deviation from the paper (README): without the authors' CIFAR-100 checkpoint the model is
# fine-tuned here from the configured timm weights.
rule finetune_cifar:
    input:
        init="results/checkpoints/finetune_init/{model}.pt",
        pickles=lambda wildcards: f"results/data/{model_dataset(wildcards.model)}/cifar-100-python",
    output:
        checkpoint="results/checkpoints/{model}.pt",
        report="results/checkpoints/{model}.training.json",
    wildcard_constraints:
        model=alternatives(FINETUNED_MODELS),
    params:
        spec=lambda wildcards: MODELS[wildcards.model],
        seed=config["seed"],
        device=config["extraction"]["device"],
    threads: 4
    resources:
        gpu=1,
        mem_mb=lambda wildcards, attempt: 16000 * attempt,
        runtime=lambda wildcards, attempt: 240 * attempt,
    conda:
        "../envs/extraction.yaml"
    log:
        "results/logs/finetune_cifar/{model}.log",
    benchmark:
        "results/benchmarks/finetune_cifar/{model}.tsv"
    script:
        "../workflow_scripts/finetune_cifar.py"
