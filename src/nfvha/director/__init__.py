"""The HA director: the controller's real-time core in a process of its own (ADR 0014).

Host liveness (ADR 0015) and the generic availability manager run here, where no API
request, report or store write of the VIM process can delay them.
"""
