"""Availability management at the VNF level (AMF-like): see docs/adr/0008.

Deliberately empty: a VNFC process imports ``nfvha.amf.sdk`` with the standard
library alone, and Python runs this file first.
"""
