"""Interactive notebook widgets (ipywidgets 8): the generation Playground, the Attention
explorer, the Fine-tune panel and the Interventions panel. Each is thin: it calls the
session's public API on a background thread and shows the pure figure builders' output.

Example:
    >>> from gemma_lab.testing import tiny_session
    >>> from gemma_lab.widgets import playground
    >>> playground(tiny_session())  # doctest: +ELLIPSIS
    Playground(...)
"""

from gemma_lab.widgets._attention_explorer import AttentionExplorer, attention_explorer
from gemma_lab.widgets._branches import Branch
from gemma_lab.widgets._finetune_panel import FinetunePanel, finetune_panel
from gemma_lab.widgets._interventions import InterventionsPanel, interventions_panel
from gemma_lab.widgets._playground import Playground, playground
from gemma_lab.widgets._token_strip import TokenStrip

__all__ = [
    "AttentionExplorer",
    "Branch",
    "FinetunePanel",
    "InterventionsPanel",
    "Playground",
    "TokenStrip",
    "attention_explorer",
    "finetune_panel",
    "interventions_panel",
    "playground",
]
