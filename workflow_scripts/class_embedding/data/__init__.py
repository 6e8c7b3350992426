"""Input data: the generated demo dataset, ImageNet-S and CIFAR-100 preparation, the stimulus and
token-label tables, downloads, and the pre-flight checks of user-provided inputs."""
