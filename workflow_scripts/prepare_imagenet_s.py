from pathlib import Path

from class_embedding import logs
from class_embedding.data import downloads, imagenet_s_preparation

with logs.logged(snakemake):
    spec = snakemake.params.spec
    if Path(snakemake.input.imagenet_val).is_file():
        downloads.verify(snakemake.input.imagenet_val, spec.get("imagenet_val_checksum"), "ImageNet validation archive")
    imagenet_s_preparation.prepare_imagenet_s(
        imagenet_val=snakemake.input.imagenet_val,
        segmentation_zip=snakemake.input.segmentation,
        split_mappings={"validation": snakemake.input.validation_mapping, "test": snakemake.input.test_mapping},
        validation_names=snakemake.input.validation_names,
        categories=snakemake.input.categories,
        images_out=snakemake.output.images,
        categories_out=snakemake.output.categories,
        synset_mapping=spec.get("synset_mapping"),
        link=spec.get("link", "hardlink"),
    )
