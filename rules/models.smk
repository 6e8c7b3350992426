# Checkpoints: the demo's trained models (the paper run downloads its weights here instead) and
# the seeded random-initialisation twins.


rule train_demo_model:
    input:
        unpack(model_dataset_files),
    output:
        checkpoint=layout.checkpoint("{model}"),
        report=layout.training_report("{model}"),
    log:
        "results/logs/train_demo_model/{model}.log",
    benchmark:
        "results/benchmarks/train_demo_model/{model}.tsv"
    wildcard_constraints:
        model=alternatives(models_with_source("demo_training")),
    conda:
        "../envs/extraction.yaml"
    threads: 8  # scaled down to --cores by Snakemake
    resources:
        mem_mb=per_attempt(4000),
        runtime=per_attempt(30),
    params:
        spec=model_spec,
        training=demo_training_settings,
        seed=config["seed"],
    script:
        "../workflow_scripts/train_demo_model.py"


rule random_twin_checkpoint:
    output:
        layout.checkpoint("{model}"),
    log:
        "results/logs/random_twin_checkpoint/{model}.log",
    wildcard_constraints:
        model=alternatives(models_with_source("random_init")),
    conda:
        "../envs/extraction.yaml"
    params:
        spec=model_spec,
    script:
        "../workflow_scripts/random_twin_checkpoint.py"


# The paper's pretrained weights (config/paper.yaml). Fetching runs on the submitting machine
# (localrule: compute nodes may be offline); the download cache (weights_cache) is under
# resources/, the converted checkpoints under results/: every converted checkpoint is a plain
# state dict of the configured architecture that passes the lens audit before it is written.
# Weights already in weights_cache are read without network. Otherwise the host is checked first
# (class_embedding/network.py): offline, the job fails in seconds naming the tag and the two ways
# to supply the weights. Transient errors are retried inside the job (huggingface_hub, download()),
# so the fetching rules set retries: 0, which also overrides a profile's retries: Snakemake would
# retry an unreachable host as well.


rule fetch_timm_weights:
    output:
        layout.checkpoint("{model}"),
    log:
        "results/logs/fetch_timm_weights/{model}.log",
    wildcard_constraints:
        model=alternatives(models_with_source("timm")),
    retries: 0
    localrule: True
    conda:
        "../envs/extraction.yaml"
    params:
        spec=model_spec,
        cache=config["weights_cache"],
    script:
        "../workflow_scripts/fetch_timm_weights.py"


# Fetched like a dataset's downloads (rule download: cached, local, retried inside the job).
use rule download as download_checkpoint with:
    output:
        layout.release_checkpoint(config["weights_cache"], "{model}"),
    log:
        "results/logs/download_checkpoint/{model}.log",
    wildcard_constraints:
        model=alternatives(models_with_source("url")),
    retries: 0
    params:
        source=model_weights,


rule convert_checkpoint:
    input:
        checkpoint_source,
    output:
        layout.checkpoint("{model}"),
    log:
        "results/logs/convert_checkpoint/{model}.log",
    wildcard_constraints:
        model=alternatives(models_with_source("url") + USER_CHECKPOINT_MODELS),
    conda:
        "../envs/extraction.yaml"
    resources:
        mem_mb=per_attempt(8000),
    params:
        spec=model_spec,
    script:
        "../workflow_scripts/convert_checkpoint.py"


# The start of fine-tuning: the pretrained backbone with a new, seeded head.
use rule fetch_timm_weights as fetch_finetune_init with:
    output:
        layout.finetune_init_checkpoint("{model}"),
    log:
        "results/logs/fetch_finetune_init/{model}.log",
    wildcard_constraints:
        model=alternatives(FINETUNED_MODELS),
    params:
        spec=model_spec,
        cache=config["weights_cache"],
        seed=config["seed"],


# Deviation from the paper (docs/paper.md): without the authors' CIFAR-100 checkpoint the model is
# fine-tuned here from the configured timm weights. Hours of GPU time: protected (read-only),
# so no rerun or --forcerun overwrites it by accident.
rule finetune_cifar:
    input:
        init=rules.fetch_finetune_init.output[0],
        pickles=finetune_pickles,
    output:
        checkpoint=protected(layout.checkpoint("{model}")),
        report=layout.training_report("{model}"),
    log:
        "results/logs/finetune_cifar/{model}.log",
    benchmark:
        "results/benchmarks/finetune_cifar/{model}.tsv"
    wildcard_constraints:
        model=alternatives(FINETUNED_MODELS),
    conda:
        "../envs/extraction.yaml"
    threads: 4
    resources:
        **gpu_job(mem_mb=16000, runtime=240),
    params:
        spec=model_spec,
        seed=config["seed"],
    script:
        "../workflow_scripts/finetune_cifar.py"
