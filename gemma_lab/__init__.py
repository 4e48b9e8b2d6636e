"""gemma_lab: research Gemma models from Jupyter notebooks."""
