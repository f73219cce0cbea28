"""Human review of a run's avatars: the reviewer app, its store and the statistics on its judgments."""
