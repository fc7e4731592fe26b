"""Layer 1: what crosses a socket between agent, host supervisor and controller."""
