"""Evaluation: metrics (``metrics.py``), eval sets (``sets.py``), one set's run across ranks
(``runner.py``), the engine's in-loop evaluation (``loop.py``) and ``python -m vita.eval`` (``__main__.py``)."""
