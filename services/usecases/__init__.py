"""The verbs that combine registry and ML. `training` imports torch: only the worker imports it."""
