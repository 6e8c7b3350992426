"""ViT class-embedding workflow: "Analyzing Vision Transformers for Image Classification in
Class Embedding Space" (Vilas, Schaumlöffel, Roig, NeurIPS 2023), as a Snakemake workflow.

Inputs fetched from elsewhere, under resources/ (kept when results/ is deleted):
  downloads/<dataset>/<item>        dataset downloads (ImageNet-S files, the CIFAR-100 archive)
  samples/<name>                    sample images given by URL
  weights/                          download cache of pretrained weights (config weights_cache)
Outputs, under results/:
  data/<dataset>/                   dataset (generated or prepared), stimuli.parquet, token labels
  checkpoints/<model>.pt            timm state dicts (<model>_random.pt: seeded random twins)
  extract/model=<m>/layer=<kind>/block=<b>/tokens.parquet
                                    class projection of every token of every block (Hive
                                    partitions, as memories/, perturbation/, probes/, explain/:
                                    docs/querying.md; names owned by class_embedding.results_layout)
  figures/<name>.pdf, tables/<name>.csv
  explorer/<model>.html             offline page of every token of every block (index.html)
"""

from snakemake.utils import min_version

min_version("9.0")


# The embedded demo unless a config is given (--configfile replaces it rather than merging into it).
if not workflow.config_settings.configfiles:

    configfile: "config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"


wildcard_constraints:
    model=alternatives(MODELS),
    dataset=alternatives(config["datasets"]),
    shard=r"\d+",
    grid=r"\d+(x\d+)?",


include: "rules/data.smk"
include: "rules/models.smk"
include: "rules/extract.smk"
include: "rules/identifiability.smk"
include: "rules/class_building.smk"
include: "rules/perturbation.smk"
include: "rules/memories.smk"
include: "rules/explain.smk"
include: "rules/probing.smk"
include: "rules/paper.smk"
include: "rules/checks.smk"
include: "rules/tutorial.smk"
include: "rules/explorer.smk"


rule all:
    default_target: True
    input:
        final_outputs(),
