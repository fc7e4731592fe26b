"""The local NFVI driver: network namespaces, cgroups, detached processes, power, cleanup."""
