"""Everything about other nodes: membership, the directory, replication,
forwarding, failover (etcd is imported only by etcd.py and the modules that
talk to it, in cluster mode only)."""
