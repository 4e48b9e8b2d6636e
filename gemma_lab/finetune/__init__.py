"""LoRA fine-tuning of a session's model and its saved adapters.

`lab.finetune(data, ...)` trains (see `FinetuneRun`), `lab.adapters` saves / loads / unloads /
lists adapters. Modules: `data` (load, validate, tokenise), `lora` (keras-hub LoRA weights),
`trainer` (Keras fit with live loss and safe stop), `compare` (before/after probabilities),
`result` (`FinetuneResult`), `adapters` (on-disk adapters).
"""

from gemma_lab.finetune.adapters import Adapters, adapters_dir
from gemma_lab.finetune.compare import Comparison, response_probabilities
from gemma_lab.finetune.data import Example, load_examples
from gemma_lab.finetune.result import FinetuneResult
from gemma_lab.finetune.trainer import FinetuneRun

__all__ = [
    "Adapters",
    "Comparison",
    "Example",
    "FinetuneResult",
    "FinetuneRun",
    "adapters_dir",
    "load_examples",
    "response_probabilities",
]
