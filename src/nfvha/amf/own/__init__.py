"""A VNF's own availability manager (ADR 0008, "VNF-level AM").

The generic VNFM's engine (``nfvha.amf.manager.AvailabilityManager``) for one VNF, run
by the VNF itself - embedded as a library or as its own process (``nfvha vnf-am``) -
over the VIM's public API only: the VIM's events come from ``GET /v1/events`` (a long
poll), repairs go to ``POST /v1/vnfcs/{name}/start|stop`` and
``POST /v1/vms/{vm}/repair``, and the assignment records are the VNF's own state, in an
SQLite file of its own. Nothing here imports the controller.
"""
