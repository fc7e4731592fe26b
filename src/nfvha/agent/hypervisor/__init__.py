"""Hypervisor drivers: what runs a host's VMs, behind one contract (ADR 0019)."""
