"""The Python client for a Kiln server: `kiln.Client()` reads KILN_URL and KILN_API_KEY."""

from kiln.client import Client
from kiln.errors import KilnError
from kiln.results import Dataset, Job, Prediction, Study, Version

__all__ = ["Client", "Dataset", "Job", "KilnError", "Prediction", "Study", "Version"]
