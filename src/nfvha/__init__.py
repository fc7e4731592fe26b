"""nfvha: coordinated multi-layer high availability for NFV."""
