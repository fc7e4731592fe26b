"""Layer 6: benchmarks (``nfvha bench ...``), on the real test bed."""
