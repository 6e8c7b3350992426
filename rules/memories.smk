# Key–value memories (METHOD §4.11, notebook 2 of §5). One torch job per trained model projects
# every value vector onto the class embeddings (and builds the random baseline model); the
# figure rules combine that cache with the activated memories stored by the extraction.
# Captions (report/<name>.rst) say which paper figure each target reproduces.


rule value_projections:
    input:
        checkpoint="results/checkpoints/{model}.pt",
    output:
        classes="results/memories/{model}/class_memories.parquet",
        memories="results/memories/{model}/memory_classes.parquet",
    wildcard_constraints:
        model=alternatives(TRAINED_MODELS),
    params:
        spec=lambda wildcards: MODELS[wildcards.model],
        seed=config["seed"],
    resources:
        mem_mb=lambda wildcards, attempt: 4000 * attempt,
    conda:
        "../envs/extraction.yaml"
    log:
        "results/logs/value_projections/{model}.log",
    script:
        "../workflow_scripts/value_projections.py"


MEMORY_MODELS = [
    {**describe_model(name), "memories": f"results/memories/{name}"} for name in TRAINED_MODELS
]

# What each target reads: the weight-derived cache (per class or per memory), the activated
# memories of every attn/mlp sublayer with the predictions, the stimulus categories.
MEMORY_INPUTS = {
    "classes": [f"results/memories/{name}/class_memories.parquet" for name in TRAINED_MODELS],
    "memories": [f"results/memories/{name}/memory_classes.parquet" for name in TRAINED_MODELS],
    "extraction": [
        path
        for name in TRAINED_MODELS
        for path in layer_tables(name, ("attn", "mlp")) + [f"{extract_dir(name)}/predictions.parquet"]
    ],
    "stimuli": sorted({stimuli_table(name) for name in TRAINED_MODELS}),
}

# target name -> (inputs, options passed to its function)
MEMORY_TARGETS = {
    "fig_class_value_agreement": (["classes"], {}),
    "fig_key_value_agreement_rate": (["classes", "memories", "extraction"], {}),
    "fig_agreement_accuracy_diff": (["classes", "memories", "extraction"], {}),
    "fig_memory_compositionality": (["memories", "extraction"], {}),
    "fig_memory_compare": (["classes", "memories", "extraction"], {}),
    # block_index: 0-based (null = L-2); memories: ids, or {model: ids} (null = the 5 with the
    # largest class projection). The paper: block index 10, mlp, ViT-B/32 [4, 8, 10, 32, 33, 35, 40].
    "tab_value_vector_classes": (
        ["memories", "stimuli"],
        {"block_index": None, "layer_type": "mlp", "memories": None},
    ),
}


for target, (needs, options) in MEMORY_TARGETS.items():

    rule:
        name:
            target
        input:
            [path for need in needs for path in MEMORY_INPUTS[need]],
        output:
            **figure_outputs(target, category="Key-value memories"),
        params:
            models=MEMORY_MODELS,
            seed=config["seed"],
            options=options,
        conda:
            "../envs/plotting.yaml"
        log:
            f"results/logs/memories/{target}.log",
        script:
            "../workflow_scripts/memory_figure.py"
