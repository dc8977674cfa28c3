"""Serving: the ``Recommender`` Python API and the ``recgpt serve`` HTTP service."""

from recgpt.serving.recommender import Catalog, RatingEstimate, Recommendation, Recommender, RequestError

__all__ = ["Catalog", "RatingEstimate", "Recommendation", "Recommender", "RequestError"]
