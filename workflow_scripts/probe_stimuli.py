from pathlib import Path

from class_embedding import logs, tables
from class_embedding.analyses import probes

with logs.logged(snakemake):
    images_dir = Path(snakemake.input.images)
    settings = snakemake.params.probing
    split = probes.select_probe_stimuli(
        images_dir / "test",
        images_dir / "LOC_synset_mapping.txt",
        settings["images_per_class"],
        snakemake.params.exclude_wnids,
        settings["short_classes"],
    )
    tables.write_table(
        split,
        snakemake.output[0],
        {"split": "test", "images_per_class": settings["images_per_class"], "short_classes": settings["short_classes"]},
    )
