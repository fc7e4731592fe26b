"""Layer 0: utilities with no dependency on the rest of nfvha."""
