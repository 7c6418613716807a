"""Wire-compatible stubs of a subset of etcd's v3 API (kv.proto, rpc.proto beside them)."""
