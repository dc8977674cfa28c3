"""Inference: generation from a trained model and recommendations for a user."""
