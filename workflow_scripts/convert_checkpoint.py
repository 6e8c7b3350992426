from class_embedding import logs
from class_embedding.data import downloads
from class_embedding.extraction import model_audit
from class_embedding.models import ModelSpec, building, checkpoints

with logs.logged(snakemake):
    name = snakemake.wildcards.model
    spec = ModelSpec.from_params(snakemake.params.spec, name)
    weights = spec.weights
    source = snakemake.input[0]
    what = f"checkpoint of model '{name}'"
    if weights["source"] == "url":
        downloads.verify_download(source, weights.get("checksum"), what)
    else:
        downloads.verify(source, weights.get("checksum"), what)
    state = checkpoints.read_state_dict(source, name, weights.get("state_dict_key"), weights.get("strip_prefix", ""))
    model = checkpoints.load_backbone(building.build_model(spec, name), state, name, source)
    model_audit.audit(model, name)
    checkpoints.save_checkpoint(model, snakemake.output[0])
