"""Benchmarks anyone can rerun: decision time, estimator error, Envoy and APISIX overhead."""
