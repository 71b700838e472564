"""Algorithm registry: importing this package registers every built-in algorithm."""
