"""``/data/replications``: Rucio replication requests as their own resource (issue 6)."""
