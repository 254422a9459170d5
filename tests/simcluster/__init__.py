"""Simulated Kubernetes cluster with Cilium, for tests."""
