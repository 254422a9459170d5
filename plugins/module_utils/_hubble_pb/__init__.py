"""Python code generated from proto/ by scripts/gen_protos.py: Hubble's flow, relay and observer messages, and
netpol.cilium's reading view of flows (flow_view_pb2).

Note that this package is PRIVATE to the collection. It can change at any time. Do not edit the *_pb2*.py files:
change proto/*.proto and run `python scripts/gen_protos.py`.
"""
