"""Everything about other nodes: membership, the directory, replication,
forwarding, failover (etcd is imported only in its own modules)."""
