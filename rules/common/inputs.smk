# Named input functions: what a job of a {model} or {dataset} wildcard reads. Included by
# rules/common.smk; no rules here.


def by_model(function, **kwargs):
    """The input or params function of a rule's {model} wildcard that ``function(model, **kwargs)``
    is: one adapter instead of a named wrapper per helper."""
    return lambda wildcards: function(wildcards.model, **kwargs)


def model_spec(wildcards):
    """A model's entry as the jobs that compute from it get it: without its display name, so that
    a new label reruns only figures, tables and pages."""
    return compute_spec(MODELS[wildcards.model])


def model_description(wildcards):
    return describe_model(wildcards.model)


def model_preprocessing(wildcards):
    return MODELS[wildcards.model]["preprocessing"]


def model_token_map_inputs(wildcards):
    """What drawing a model's tokens over its images reads besides the layer tables: the images,
    stimuli and predictions, and the token labels with the segmentation categories where masks exist."""
    model = wildcards.model
    files = dataset_files(model_dataset(model))
    inputs = {
        "images": files["images"],
        "stimuli": stimuli_table(model),
        "predictions": layout.predictions_table(model),
    }
    if token_labels_table(model) is not None:
        # ImageNet-S masks come with a categories file, an image folder's masks are files of their own.
        inputs.update(
            token_labels=token_labels_table(model), **{k: files[k] for k in ("categories", "masks") if k in files}
        )
    return inputs


def model_dataset_files(wildcards):
    return dataset_files(model_dataset(wildcards.model))


def model_weights(wildcards):
    return MODELS[wildcards.model]["weights"]


def demo_training_settings(wildcards):
    """The demo_training config, overridden by the model's own weights settings."""
    weights = model_weights(wildcards)
    return {**config["demo_training"], **{k: v for k, v in weights.items() if k != "source"}}


def checkpoint_source(wildcards):
    """The downloaded release checkpoint, or the file you gave."""
    weights = model_weights(wildcards)
    return (
        layout.release_checkpoint(config["weights_cache"], wildcards.model)
        if weights["source"] == "url"
        else weights["path"]
    )


def finetune_pickles(wildcards):
    return f"{dataset_root(model_dataset(wildcards.model))}/cifar-100-python"


def shard_dirs(model):
    """Shard outputs of a model. Without shard_size there is one, so the whole DAG is known up
    front; with it, their number is known once the stimulus table exists (a checkpoint)."""
    shard_size = config["extraction"]["shard_size"]
    n_shards = 1
    if shard_size:
        import pyarrow.parquet

        table = checkpoints.stimuli.get(dataset=model_dataset(model)).output[0]
        n_shards = -(-pyarrow.parquet.read_metadata(table).num_rows // shard_size)
    return [layout.extraction_shard(model, shard) for shard in range(n_shards)]


def shard_inputs(model):
    """Input function of a model's merge rule: its shard outputs."""

    def inputs(wildcards):
        return shard_dirs(model)

    return inputs


def model_probe_ranks(wildcards):
    """The linear-probe token ordering, for models with probes."""
    return layout.probe_tables(wildcards.model)["ranks"] if wildcards.model in PROBE_MODELS else []


def model_probe_stimuli(wildcards):
    return layout.probe_stimuli_table(model_dataset(wildcards.model))


def dataset_inputs(wildcards):
    return dataset_files(wildcards.dataset)


def stimulus_run_inputs(model):
    """What a job running a model on its stimuli reads: the dataset, the stimulus table, the checkpoint."""
    return {
        **dataset_files(model_dataset(model)),
        "stimuli": stimuli_table(model),
        "checkpoint": layout.checkpoint(model),
    }


def stimulus_run_params(*sections):
    """Params of a job running a model on its stimuli: the model's spec and the extraction
    settings, and those of the config sections named, each without its run settings (batch
    size, device, workers: the job reads them from the config, class_embedding.run_settings)."""
    return {"spec": model_spec, **{section: result_settings(config, section) for section in ("extraction", *sections)}}
