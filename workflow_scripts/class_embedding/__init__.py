"""Library behind the workflow: class-embedding projections of ViT hidden states.

Rule scripts in ``workflow_scripts/`` are thin entry points over these modules; tests import
them directly.
"""

__version__ = "0.1.0"
