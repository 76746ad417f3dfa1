"""vita: a Hydra-composed framework that trains omni-modal LLMs with the VITA-1.5 recipe."""

__version__ = "0.1.0"
