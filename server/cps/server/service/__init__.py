"""Use cases of the seed API, one per call: local or forwarded, evaluated,
stored and replicated per write mode. No grpc."""
