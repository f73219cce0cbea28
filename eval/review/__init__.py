"""Human review: blind ratings, pairwise A/B votes and release approval (`python -m eval.review`), its store and the statistics on its judgments."""
