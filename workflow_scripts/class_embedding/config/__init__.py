"""The workflow's reading of a config when it is parsed: the checks that stop a dry run
(``checks``) and which models each stage runs on (``stage_models``). Torch-free."""
