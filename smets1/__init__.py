"""smets1."""
