# Datasets: the embedded demo's generator; the paper's ImageNet-S919 (downloaded annotations +
# your ImageNet-1k validation images) and CIFAR-100; the stimulus table and per-token
# class/context labels.


rule demo_dataset:
    output:
        **prepared_dataset_outputs(),
    log:
        "results/logs/demo_dataset/{dataset}.log",
    benchmark:
        "results/benchmarks/demo_dataset/{dataset}.tsv"
    wildcard_constraints:
        dataset=alternatives(datasets_of_kind("generate")),
    conda:
        "../envs/analysis.yaml"
    params:
        spec=generator_spec,
        seed=config["seed"],
    script:
        "../workflow_scripts/demo_dataset.py"


# The URL and checksum are params, hence part of the key of Snakemake's between-workflow cache
# (--cache): another checkout of the workflow reuses a download instead of fetching it again.
rule download:
    output:
        layout.download_path("{dataset}", "{item}"),
    log:
        "results/logs/download/{dataset}_{item}.log",
    wildcard_constraints:
        item="segmentation|validation_names|validation_mapping|test_mapping|categories|cifar100",
    cache: "omit-software"
    # Retried inside the job (transient errors only); an unreachable host fails at once, and 0
    # also overrides a profile's retries (rules/models.smk).
    retries: 0
    localrule: True  # compute nodes may be offline
    conda:
        "../envs/analysis.yaml"
    params:
        source=download_source,
    script:
        "../workflow_scripts/download_file.py"


rule prepare_imagenet_s:
    input:
        **{
            item: layout.download_path("{dataset}", item)
            for item in ("segmentation", "validation_names", "validation_mapping", "test_mapping", "categories")
        },
        imagenet_val=imagenet_val_archive,
    output:
        **prepared_dataset_outputs(),
    log:
        "results/logs/prepare_imagenet_s/{dataset}.log",
    benchmark:
        "results/benchmarks/prepare_imagenet_s/{dataset}.tsv"
    wildcard_constraints:
        dataset=alternatives(datasets_of_kind("imagenet_s")),
    conda:
        "../envs/extraction.yaml"
    resources:
        mem_mb=4000,
        runtime=120,
    params:
        spec=imagenet_s_spec,
    script:
        "../workflow_scripts/prepare_imagenet_s.py"


rule prepare_cifar100:
    input:
        source=cifar_source,
    output:
        images=prepared_dataset_outputs()["images"],
        pickles=directory(layout.cifar_pickles("{dataset}")),
    log:
        "results/logs/prepare_cifar100/{dataset}.log",
    benchmark:
        "results/benchmarks/prepare_cifar100/{dataset}.tsv"
    wildcard_constraints:
        dataset=alternatives(datasets_of_kind("cifar100")),
    conda:
        "../envs/extraction.yaml"
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        checksum=cifar_download_checksum,
    script:
        "../workflow_scripts/prepare_cifar100.py"


checkpoint stimuli:
    input:
        unpack(dataset_inputs),
        unpack(stimuli_csv),
    output:
        layout.stimuli_table("{dataset}"),
    log:
        "results/logs/stimuli/{dataset}.log",
    conda:
        "../envs/extraction.yaml"
    params:
        kind=dataset_kind_of,
        image_folder=image_folder_spec,
        num_classes=dataset_num_classes,
        images_per_class=config["stimuli"]["images_per_class"],
        min_class_share=config["stimuli"]["min_class_share"],
        exclude_wnids=config["stimuli"]["exclude_wnids"],
    script:
        "../workflow_scripts/stimuli.py"


rule token_labels:
    input:
        unpack(dataset_inputs),
        stimuli=rules.stimuli.output[0],
    output:
        layout.token_labels_table("{dataset}", "{grid}"),
    log:
        "results/logs/token_labels/{dataset}_g{grid}.log",
    wildcard_constraints:
        dataset=alternatives(d for d in config["datasets"] if has_segmentation(d)),
    conda:
        "../envs/analysis.yaml"
    script:
        "../workflow_scripts/token_labels.py"
