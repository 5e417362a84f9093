"""The govhost control plane: a shared core and one subpackage per capability.

See docs/architecture.md for the layers and where each change belongs.
"""
