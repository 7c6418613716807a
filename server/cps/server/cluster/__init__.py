"""Cluster mode: membership, director election and checkpoint records in etcd."""
