"""Layer 6: the local NFVI test bed as a whole (deploy, faults, measurements)."""
