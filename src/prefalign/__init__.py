"""prefalign: align language models with human preferences (DPO and its relatives)."""

__version__ = "0.1.0"
