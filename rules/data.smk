# Datasets: the embedded demo's generator, the stimulus table and per-token class/context labels.


rule demo_dataset:
    output:
        images=directory("results/data/{dataset}/ImageNetS919"),
        categories="results/data/{dataset}/data/categories/ImageNetS_categories_im919.txt",
    wildcard_constraints:
        dataset=alternatives(d for d in config["datasets"] if is_generated(d)),
    params:
        spec=lambda wildcards: config["datasets"][wildcards.dataset]["generate"],
        seed=config["seed"],
    conda:
        "../envs/extraction.yaml"
    log:
        "results/logs/demo_dataset/{dataset}.log",
    benchmark:
        "results/benchmarks/demo_dataset/{dataset}.tsv"
    script:
        "../workflow_scripts/demo_dataset.py"


checkpoint stimuli:
    input:
        unpack(lambda wildcards: dataset_files(wildcards.dataset)),
    output:
        "results/data/{dataset}/stimuli.parquet",
    params:
        images_per_class=config["stimuli"]["images_per_class"],
        exclude_wnids=config["stimuli"]["exclude_wnids"],
    conda:
        "../envs/extraction.yaml"
    log:
        "results/logs/stimuli/{dataset}.log",
    script:
        "../workflow_scripts/stimuli.py"


rule token_labels:
    input:
        unpack(lambda wildcards: dataset_files(wildcards.dataset)),
        stimuli="results/data/{dataset}/stimuli.parquet",
    output:
        "results/data/{dataset}/token_labels_g{grid}.parquet",
    conda:
        "../envs/extraction.yaml"
    log:
        "results/logs/token_labels/{dataset}_g{grid}.log",
    script:
        "../workflow_scripts/token_labels.py"
