"""Envoy configs for nanoLLM: gRPC-JSON transcoding (transcoder.yaml) and gRPC load balancing
over replicas with health checks (balancer.yaml); render.py writes copies with other addresses."""
