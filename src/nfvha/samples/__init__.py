"""Sample programs run by the local NFVI: VNFC services inside VMs and host processes.

Each is a small stand-alone process (``python -m nfvha.samples.<name>``) that imports
only the standard library, so it starts fast and can run anywhere a VM or host does.
"""
