"""Layer 3: the host agent (NFVI level) and the host supervisor."""
