"""minirank: LLM reranking, built to be read."""

__version__ = "0.1.0"
