"""Layer 1: the information model (topology, containment graph, events)."""
