from class_embedding import downloads, logs, models

with logs.logged(snakemake):
    spec, name = snakemake.params.spec, snakemake.wildcards.model
    weights = spec["weights"]
    source = snakemake.input[0]
    what = f"checkpoint of model '{name}'"
    if weights["source"] == "url":
        downloads.verify_download(source, weights.get("checksum"), what)
    else:
        downloads.verify(source, weights.get("checksum"), what)
    state = models.read_state_dict(source, name, weights.get("state_dict_key"), weights.get("strip_prefix", ""))
    model = models.load_backbone(models.build_model(spec, name), state, name, source)
    models.audit(model, name)
    models.save_checkpoint(model, snakemake.output[0])
