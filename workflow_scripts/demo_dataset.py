from class_embedding import logs
from class_embedding.data import demo_dataset

with logs.logged(snakemake):
    demo_dataset.write_from_spec(
        snakemake.output.images,
        snakemake.output.categories,
        spec=snakemake.params.spec,
        seed=snakemake.params.seed,
    )
