"""Looking inside a Gemma: attention probabilities, residual stream and logit lens
(`trace_text` → `Trace`), and input attribution (`attribute_text` → `Attribution`).

Use them through the session: `lab.trace(text)` and `lab.attribute(prompt, target=...)`.
Importing this package imports no Keras.
"""

from __future__ import annotations

from gemma_lab.inspect.records import Attribution, Trace

__all__ = ["Attribution", "Trace"]
