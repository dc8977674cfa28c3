"""recgpt: train, evaluate and serve RecGPT-style text recommenders on llm-foundry."""

__version__ = "0.1.0"
