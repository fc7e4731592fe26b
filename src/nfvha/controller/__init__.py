"""Layer 4: the controller (VIM level)."""
