# Datasets: the embedded demo's generator; the paper's ImageNet-S919 (downloaded annotations +
# your ImageNet-1k validation images) and CIFAR-100; the stimulus table and per-token
# class/context labels.


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
        "../envs/analysis.yaml"
    log:
        "results/logs/demo_dataset/{dataset}.log",
    benchmark:
        "results/benchmarks/demo_dataset/{dataset}.tsv"
    script:
        "../workflow_scripts/demo_dataset.py"


rule download:
    output:
        "results/data/downloads/{dataset}/{item}",
    wildcard_constraints:
        item="segmentation|validation_names|validation_mapping|test_mapping|categories|cifar100",
    params:
        source=lambda wildcards: dataset_download(wildcards.dataset, wildcards.item),
    localrule: True  # compute nodes may be offline
    retries: 2
    conda:
        "../envs/analysis.yaml"
    log:
        "results/logs/download/{dataset}_{item}.log",
    script:
        "../workflow_scripts/download_file.py"


rule prepare_imagenet_s:
    input:
        imagenet_val=lambda wildcards: config["datasets"][wildcards.dataset]["imagenet_s"]["imagenet_val"],
        segmentation="results/data/downloads/{dataset}/segmentation",
        validation_names="results/data/downloads/{dataset}/validation_names",
        validation_mapping="results/data/downloads/{dataset}/validation_mapping",
        test_mapping="results/data/downloads/{dataset}/test_mapping",
        categories="results/data/downloads/{dataset}/categories",
    output:
        images=directory("results/data/{dataset}/ImageNetS919"),
        categories="results/data/{dataset}/data/categories/ImageNetS_categories_im919.txt",
    wildcard_constraints:
        dataset=alternatives(d for d in config["datasets"] if dataset_kind(d) == "imagenet_s"),
    params:
        spec=lambda wildcards: config["datasets"][wildcards.dataset]["imagenet_s"],
    resources:
        mem_mb=4000,
        runtime=120,
    conda:
        "../envs/extraction.yaml"
    log:
        "results/logs/prepare_imagenet_s/{dataset}.log",
    benchmark:
        "results/benchmarks/prepare_imagenet_s/{dataset}.tsv"
    script:
        "../workflow_scripts/prepare_imagenet_s.py"


rule prepare_cifar100:
    input:
        source=lambda wildcards: cifar_source(wildcards.dataset),
    output:
        images=directory("results/data/{dataset}/ImageNetS919"),
        pickles=directory("results/data/{dataset}/cifar-100-python"),
    wildcard_constraints:
        dataset=alternatives(d for d in config["datasets"] if dataset_kind(d) == "cifar100"),
    params:
        checksum=lambda wildcards: cifar_download_checksum(wildcards.dataset),
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../envs/extraction.yaml"
    log:
        "results/logs/prepare_cifar100/{dataset}.log",
    benchmark:
        "results/benchmarks/prepare_cifar100/{dataset}.tsv"
    script:
        "../workflow_scripts/prepare_cifar100.py"


checkpoint stimuli:
    input:
        unpack(lambda wildcards: dataset_files(wildcards.dataset)),
        unpack(lambda wildcards: stimuli_csv(wildcards.dataset)),
    output:
        "results/data/{dataset}/stimuli.parquet",
    params:
        kind=lambda wildcards: dataset_kind(wildcards.dataset),
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
    wildcard_constraints:
        dataset=alternatives(d for d in config["datasets"] if has_segmentation(d)),
    conda:
        "../envs/analysis.yaml"
    log:
        "results/logs/token_labels/{dataset}_g{grid}.log",
    script:
        "../workflow_scripts/token_labels.py"
