"""HTTP resources, one module per capability."""
