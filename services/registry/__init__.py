"""The SQL model registry: tables, repositories, the unit of work and the artifact store. Knows nothing of ML."""
